package hub

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupehq/troupe/rooms"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/internal/wire"
)

// Config configures a Manager.
type Config struct {
	// NewHandler returns the logic for a room; it is called when the room
	// starts and again on every restart. Nil means rooms have no logic of
	// their own (join, leave and broadcast only).
	NewHandler func(room string) Handler
	// OnError is told when a room's logic panicked and the room restarted,
	// and when a room lost its Backplane's log (a gap it could not fill).
	OnError func(room string, err error)
	// MaxRestarts bounds the restarts of a room whose logic panics: one
	// more failure within RestartWindow stops the room instead (its
	// members get room.left with the reason). 0: no bound.
	MaxRestarts   int
	RestartWindow time.Duration
	// Encode builds the envelopes of Room.Broadcast and Manager.Broadcast.
	Encode func(typ string, payload any) ([]byte, error)

	// Protocol switches on the built-in room protocol: sequence numbers,
	// history, resume and presence (see JoinWith, Publish, History).
	Protocol bool
	// HistoryMessages and HistoryBytes bound each room's in-memory history
	// (defaults DefaultHistoryMessages and DefaultHistoryBytes).
	HistoryMessages int
	HistoryBytes    int
	// NewHistory replaces the in-memory history, for example with a
	// durable store. It is called once per room, when the room starts.
	NewHistory func(room string) rooms.History
	// Retention is how long the sequence and history of a room that became
	// empty are kept, so that members coming back can resume (room
	// protocol only; default DefaultRetention, negative: not kept).
	Retention time.Duration
	// HistoryBudget bounds the memory of every room's history together,
	// live rooms and dormant ones (default DefaultHistoryBudget, negative:
	// no bound). Over it, dormant rooms are forgotten, oldest first, then
	// the longest live histories lose their oldest messages (see
	// reclaim). Only histories that implement rooms.Trimmer are counted.
	HistoryBudget int
	// MaxDormant bounds the dormant rooms kept for resume (default
	// DefaultMaxDormant, negative: no bound); beyond it the oldest is
	// forgotten.
	MaxDormant int
	// MaxMembers bounds the members of one room (0: no limit); a join
	// beyond it fails with ErrRoomFull.
	MaxMembers int
	// MaxRoomsPerSession bounds the rooms one session is in (0: no limit);
	// a join beyond it fails with ErrTooManyRooms.
	MaxRoomsPerSession int
	// PresenceWindow is how long presence changes are gathered into one
	// presence.diff (default DefaultPresenceWindow).
	PresenceWindow time.Duration
	// PresenceLimit is the number of members above which a room stops
	// listing its members and counts them instead (see presence.go); it
	// lists them again at half of it. Default DefaultPresenceLimit;
	// negative: always listed.
	PresenceLimit int
	// Backplane lets rooms span several nodes under the room protocol
	// (see Backplane; it needs Protocol); nil keeps every room in this
	// process. The Manager does not close it.
	Backplane rooms.Backplane
	// DedupeMessages bounds the message ids (mids) each room remembers
	// (default DefaultDedupeMessages; it cannot be off).
	DedupeMessages int
	// DedupeWindow is how long a room remembers a mid (default
	// DefaultDedupeWindow; negative: mids are not remembered).
	DedupeWindow time.Duration
}

// DefaultPresenceWindow is the default of Config.PresenceWindow.
const DefaultPresenceWindow = 50 * time.Millisecond

// DefaultRetention is the default of Config.Retention.
const DefaultRetention = 5 * time.Minute

// Defaults of Config.HistoryBudget and Config.MaxDormant.
const (
	DefaultHistoryBudget = 256 << 20
	DefaultMaxDormant    = 10000
)

// Stats are the counters of the rooms' memory bounds, for metrics.
type Stats struct {
	HistoryBytes  int64  // what the histories of live and dormant rooms hold
	Dormant       int    // dormant rooms kept for resume
	EvictedBudget uint64 // dormant rooms forgotten for the history budget
	EvictedLimit  uint64 // dormant rooms forgotten for the dormant-room bound
	Trims         uint64 // live histories trimmed for the history budget
	TrimmedBytes  uint64 // what those trims freed
	HistoryBudget int64  // the budget in force (0: none)
	MaxDormant    int    // the bound in force (0: none)

	Duplicates      uint64 // publishes answered with an earlier message's seq
	MidsEvictedFull uint64 // mids forgotten for DedupeMessages
	MidsEvictedAge  uint64 // mids forgotten for DedupeWindow
	// MidsEvictedBudget counts mids forgotten for HistoryBudget.
	MidsEvictedBudget uint64
}

// Manager is the entry point to the rooms of one server: it holds the
// supervisor actor and a lock-free index from room name to room actor, so
// broadcasts go straight to the room without passing the supervisor.
type Manager struct {
	cfg     Config
	sys     *session.System
	root    *actor.RootContext
	sup     *actor.PID
	live    sync.Map // room name -> *roomRef of a running room
	index   sessionIndex
	stopped chan struct{}

	// The history budget (see supervisor.reclaim). histBytes is the sum
	// of every room's roomState.histBytes; rooms add to it as they
	// append, the supervisor takes off what it forgets.
	histBytes     atomic.Int64
	reclaiming    atomic.Bool // a reclaim is on its way to the supervisor
	dormantN      atomic.Int64
	evictedBudget atomic.Uint64
	evictedLimit  atomic.Uint64
	trims         atomic.Uint64
	trimmedBytes  atomic.Uint64

	// Effectively-once publish (once.go).
	midDuplicates    atomic.Uint64
	midEvictedCount  atomic.Uint64
	midEvictedAge    atomic.Uint64
	midEvictedBudget atomic.Uint64

	stopOnce   sync.Once
	unhook     func()         // removes the OnSessionEnd hook
	publishers sync.WaitGroup // room.publish queues draining to the backplane
}

// New starts the room supervisor in sys.
func New(sys *session.System, cfg Config) *Manager {
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.PresenceWindow <= 0 {
		cfg.PresenceWindow = DefaultPresenceWindow
	}
	switch {
	case cfg.PresenceLimit == 0:
		cfg.PresenceLimit = DefaultPresenceLimit
	case cfg.PresenceLimit < 0:
		cfg.PresenceLimit = 0
	}
	switch {
	case cfg.HistoryBudget == 0:
		cfg.HistoryBudget = DefaultHistoryBudget
	case cfg.HistoryBudget < 0:
		cfg.HistoryBudget = 0
	}
	switch {
	case cfg.MaxDormant == 0:
		cfg.MaxDormant = DefaultMaxDormant
	case cfg.MaxDormant < 0:
		cfg.MaxDormant = 0
	}
	if cfg.DedupeMessages <= 0 {
		cfg.DedupeMessages = DefaultDedupeMessages
	}
	if cfg.DedupeWindow == 0 {
		cfg.DedupeWindow = DefaultDedupeWindow
	}
	m := &Manager{cfg: cfg, sys: sys, root: sys.Root(), stopped: make(chan struct{})}
	m.index.rooms = make(map[*session.Session]roomSet)
	props := actor.PropsFromProducer(func() actor.Actor {
		return &supervisor{m: m, rooms: make(map[string]*roomRef), byPID: make(map[string]*roomRef),
			dormant: make(map[string]*list.Element), byAge: list.New()}
	})
	m.sup = m.root.Spawn(props)
	m.unhook = sys.OnSessionEnd(m.sessionEnded)
	return m
}

// sessionEnded tells each room s is a member of that s is gone, so that it
// leaves as if it had asked to. A room that records s after this reads the
// index sees s closed and lets it go itself (see joinReq).
func (m *Manager) sessionEnded(s *session.Session) {
	for _, room := range m.index.of(s) {
		if v, ok := m.live.Load(room); ok {
			m.root.Send(v.(*roomRef).pid, &sessionGone{s: s})
		}
	}
}

// newHistory returns the history of a room that starts.
func (m *Manager) newHistory(room string) rooms.History {
	if m.cfg.NewHistory != nil {
		return m.cfg.NewHistory(room)
	}
	return rooms.NewMemoryHistory(m.cfg.HistoryMessages, m.cfg.HistoryBytes)
}

// Stats returns the counters of the rooms' memory bounds.
func (m *Manager) Stats() Stats {
	return Stats{
		HistoryBytes:  m.histBytes.Load(),
		Dormant:       int(m.dormantN.Load()),
		EvictedBudget: m.evictedBudget.Load(),
		EvictedLimit:  m.evictedLimit.Load(),
		Trims:         m.trims.Load(),
		TrimmedBytes:  m.trimmedBytes.Load(),
		HistoryBudget: int64(m.cfg.HistoryBudget),
		MaxDormant:    m.cfg.MaxDormant,

		Duplicates:      m.midDuplicates.Load(),
		MidsEvictedFull: m.midEvictedCount.Load(),
		MidsEvictedAge:  m.midEvictedAge.Load(),

		MidsEvictedBudget: m.midEvictedBudget.Load(),
	}
}

// overBudget asks the supervisor to reclaim history memory, once: until
// the supervisor takes the request, further calls send nothing.
func (m *Manager) overBudget() {
	if m.reclaiming.CompareAndSwap(false, true) {
		m.root.Send(m.sup, reclaim{})
	}
}

// logError tells OnError of a room's failure that no caller hears of.
func (m *Manager) logError(room string, err error) {
	if m.cfg.OnError != nil {
		m.sys.SafeCall(func() { m.cfg.OnError(room, err) })
	}
}

func (m *Manager) encode(typ string, payload any) ([]byte, error) {
	if m.cfg.Encode == nil {
		return nil, session.ErrNoEncoder
	}
	return m.cfg.Encode(typ, payload)
}

func (m *Manager) isStopped() bool {
	select {
	case <-m.stopped:
		return true
	default:
		return false
	}
}

// Join makes s a member of room, creating the room if needed. It returns
// once the room has processed the join, so anything broadcast to the room
// after Join returns reaches s. Joining a room twice is not an error.
func (m *Manager) Join(ctx context.Context, room string, s *session.Session) error {
	return m.JoinWith(ctx, room, s, nil)
}

// JoinWith is Join with the room protocol's options: under Config.Protocol
// the room itself queues room.joined (answering opts.ID) and, with
// opts.Since, the missed messages on s before any newer message, and tells
// the other members with presence.diff.
func (m *Manager) JoinWith(ctx context.Context, room string, s *session.Session, opts *JoinOptions) error {
	if !s.IsOpen() {
		return session.ErrClosed
	}
	if m.isStopped() {
		return ErrStopped
	}
	if max := m.cfg.MaxRoomsPerSession; max > 0 && m.index.count(s) >= max && !m.index.has(s, room) {
		return ErrTooManyRooms
	}
	req := &joinReq{room: room, s: s, opts: opts, reply: make(chan error, 1)}
	if v, ok := m.live.Load(room); ok {
		// A running room takes the join straight, one actor hop fewer
		// than through the supervisor, unless the supervisor is stopping
		// it (roomRef.sent and closing say how the two agree).
		ref := v.(*roomRef)
		ref.sent.Add(1)
		if !ref.closing.Load() {
			m.root.Send(ref.pid, req)
			return m.wait(ctx, req.reply)
		}
		ref.sent.Add(^uint64(0)) // not sent: the supervisor sends it
	}
	m.root.Send(m.sup, req)
	return m.wait(ctx, req.reply)
}

// Publish hands body to room under the room protocol: the room stamps the
// next sequence number, keeps the message in its history and sends
// room.message to every member, the sender included, then answers id (if
// any) with room.published. A sender that is not a member gets an error
// envelope with code not_member from the room; ErrNotMember is returned when
// the room does not exist at all.
func (m *Manager) Publish(room string, s *session.Session, body json.RawMessage, id json.RawMessage) error {
	return m.PublishOnce(room, s, body, id, "")
}

// PublishOnce is Publish with a message id: a mid the room has seen
// (Config.DedupeWindow, DedupeMessages) is not published again, and id is
// answered with the seq of the message it published (see once.go). The
// caller bounds its length (MaxMessageID).
func (m *Manager) PublishOnce(room string, s *session.Session, body, id json.RawMessage, mid string) error {
	pid, err := m.memberRoom(room, s, id)
	if pid != nil {
		m.root.Send(pid, &publishReq{s: s, body: body, id: id, mid: mid})
	}
	return err
}

// memberRoom is the actor of room, for a request (with id) of its member
// s. Nil when there is nothing to send: s is not a member (answered here
// with not_member), or the room or the manager is gone (the error).
func (m *Manager) memberRoom(room string, s *session.Session, id json.RawMessage) (*actor.PID, error) {
	ref, err := m.memberRef(room, s, id)
	if ref == nil {
		return nil, err
	}
	return ref.pid, nil
}

// memberRef is memberRoom returning the room's live reference (its actor
// and its state from one lookup).
func (m *Manager) memberRef(room string, s *session.Session, id json.RawMessage) (*roomRef, error) {
	if m.isStopped() {
		return nil, ErrStopped
	}
	v, ok := m.live.Load(room)
	if !ok {
		return nil, ErrNotMember
	}
	if !m.index.has(s, room) {
		// Answered here, not by the room: a room whose last member just
		// left may be stopping, and a request in its mailbox would be
		// lost. A member's room cannot be stopping: the index changes
		// before a join or leave is acknowledged.
		_ = s.SendText(wire.Error(id, "not_member", "not a member of room "+room))
		return nil, nil
	}
	return v.(*roomRef), nil
}

// History asks room for up to limit messages below before (0: the newest);
// the room answers s with room.history carrying id, or not_member.
func (m *Manager) History(room string, s *session.Session, before uint64, limit int, id json.RawMessage) error {
	pid, err := m.memberRoom(room, s, id)
	if pid != nil {
		m.root.Send(pid, &historyReq{s: s, before: before, limit: limit, id: id})
	}
	return err
}

// Leave removes s from room. It returns ErrNotMember if s was not a member.
func (m *Manager) Leave(ctx context.Context, room string, s *session.Session) error {
	if m.isStopped() {
		return ErrStopped
	}
	req := &leaveReq{room: room, s: s, reply: make(chan error, 1)}
	m.root.Send(m.sup, req)
	return m.wait(ctx, req.reply)
}

// LeaveAll removes s from every room it is in.
func (m *Manager) LeaveAll(ctx context.Context, s *session.Session) error {
	for _, room := range m.RoomsOf(s) {
		if err := m.Leave(ctx, room, s); err != nil && err != ErrNotMember {
			return err
		}
	}
	return nil
}

func (m *Manager) wait(ctx context.Context, reply chan error) error {
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-m.stopped:
		return ErrStopped
	}
}

// Members returns the members of room in join order (none if the room does
// not exist). The list is taken inside the room actor, so it is consistent
// with the joins and leaves acknowledged before the call.
func (m *Manager) Members(ctx context.Context, room string) ([]*session.Session, error) {
	if m.isStopped() {
		return nil, ErrStopped
	}
	if _, ok := m.live.Load(room); !ok {
		return nil, nil
	}
	req := &membersReq{room: room, reply: make(chan []*session.Session, 1)}
	m.root.Send(m.sup, req)
	select {
	case list := <-req.reply:
		return list, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-m.stopped:
		return nil, ErrStopped
	}
}

// RoomsOf returns the rooms s is a member of, sorted by name.
func (m *Manager) RoomsOf(s *session.Session) []string { return m.index.of(s) }

// Rooms returns the names of the rooms that exist (have members), sorted.
func (m *Manager) Rooms() []string {
	if m.isStopped() {
		return nil
	}
	var out []string
	m.live.Range(func(k, _ any) bool {
		out = append(out, k.(string))
		return true
	})
	sort.Strings(out)
	return out
}

// Broadcast encodes the envelope once and queues it on every member of room.
// A room without members is not an error: there is no one to deliver to.
func (m *Manager) Broadcast(room string, typ string, payload any) error {
	return m.BroadcastExcept(room, nil, typ, payload)
}

// BroadcastExcept is Broadcast to every member but except (typically the
// sender).
func (m *Manager) BroadcastExcept(room string, except *session.Session, typ string, payload any) error {
	if m.isStopped() {
		return ErrStopped
	}
	b, err := m.encode(typ, payload)
	if err != nil {
		return err
	}
	return m.broadcastFrame(room, session.Frame{Data: b}, except)
}

// BroadcastFrame queues f on every member of room but except (which may be
// nil). The room actor does the fan-out; the caller never waits on members.
// With a Backplane, the other nodes fan f out to their members too.
func (m *Manager) BroadcastFrame(room string, f session.Frame, except *session.Session) {
	_ = m.broadcastFrame(room, f, except)
}

func (m *Manager) broadcastFrame(room string, f session.Frame, except *session.Session) error {
	if v, ok := m.live.Load(room); ok {
		m.root.Send(v.(*roomRef).pid, &broadcast{frame: f, except: except})
	}
	return m.signal(room, f)
}

// signal passes a broadcast to the room's members on other nodes.
func (m *Manager) signal(room string, f session.Frame) error {
	if m.cfg.Backplane == nil || !m.cfg.Protocol {
		return nil
	}
	if err := m.cfg.Backplane.Signal(room, encodeSignal(f)); err != nil {
		return fmt.Errorf("%w: broadcast to room %s on other nodes: %w", rooms.ErrUnavailable, room, err)
	}
	return nil
}

// Deliver hands msg to the room's Handler.OnMessage, in the room's order.
func (m *Manager) Deliver(room string, from *session.Session, msg any) error {
	if m.isStopped() {
		return ErrStopped
	}
	v, ok := m.live.Load(room)
	if !ok {
		return ErrNoRoom
	}
	m.root.Send(v.(*roomRef).pid, &deliver{from: from, msg: msg})
	return nil
}

// Shutdown stops the supervisor and with it every room, and waits for that
// until ctx ends. Sessions are not touched: close them first.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.stopOnce.Do(func() {
		m.unhook()
		m.root.Stop(m.sup)
	})
	select {
	case <-m.stopped:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Messages already taken from members still go to the backplane.
	drained := make(chan struct{})
	go func() { m.publishers.Wait(); close(drained) }()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sizes returns the member count of every room, for metrics. The counts
// are read without asking the rooms, so a room busy with a join may be one
// behind.
func (m *Manager) Sizes() []int {
	var out []int
	m.live.Range(func(_, v any) bool {
		out = append(out, int(v.(*roomRef).st.size.Load()))
		return true
	})
	return out
}

// sessionIndex maps each session to its rooms, for RoomsOf and LeaveAll.
// Room actors update it; the lock is held for a map operation only.
type sessionIndex struct {
	mu    sync.Mutex
	rooms map[*session.Session]roomSet
}

// roomSet is the rooms of one session. Most sessions are in one room, which
// is kept inline: a map per session would cost about 300 bytes for each
// connection, which is most of what an idle one costs above its socket.
type roomSet struct {
	one   string              // a room, when inOne
	inOne bool                // one holds a room ("" is a valid name)
	more  map[string]struct{} // the others, made at the second room
}

func (r roomSet) has(room string) bool {
	if r.inOne && r.one == room {
		return true
	}
	_, ok := r.more[room]
	return ok
}

func (r roomSet) len() int {
	n := len(r.more)
	if r.inOne {
		n++
	}
	return n
}

func (x *sessionIndex) add(s *session.Session, room string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	set := x.rooms[s]
	switch {
	case set.has(room):
		return
	case !set.inOne:
		set.one, set.inOne = room, true
	default:
		if set.more == nil {
			set.more = make(map[string]struct{}, 1)
		}
		set.more[room] = struct{}{}
	}
	x.rooms[s] = set
}

func (x *sessionIndex) remove(s *session.Session, room string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	set, ok := x.rooms[s]
	if !ok {
		return
	}
	if set.inOne && set.one == room {
		set.one, set.inOne = "", false
	} else {
		delete(set.more, room)
	}
	if set.len() == 0 {
		delete(x.rooms, s)
		return
	}
	x.rooms[s] = set
}

func (x *sessionIndex) count(s *session.Session) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.rooms[s].len()
}

func (x *sessionIndex) has(s *session.Session, room string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.rooms[s].has(room)
}

func (x *sessionIndex) of(s *session.Session) []string {
	x.mu.Lock()
	set := x.rooms[s]
	out := make([]string, 0, set.len())
	if set.inOne {
		out = append(out, set.one)
	}
	for r := range set.more {
		out = append(out, r)
	}
	x.mu.Unlock()
	sort.Strings(out)
	return out
}
