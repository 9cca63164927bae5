package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
)

// Member is a member of a room: its id (the Identity the server's
// Authorize gave it, else its session id; the From of its messages) and
// the meta it joined with.
type Member struct {
	ID   string          `json:"id"`
	Meta json.RawMessage `json:"meta,omitempty"`
}

// Message is a room.message: the Seq-th message of a room, from a member.
type Message struct {
	Room string `json:"room"`
	Seq  uint64 `json:"seq"`
	From string `json:"from"`
	// Type is set on a message of the room's own logic (the server's
	// Room.Publish), which has no From.
	Type string          `json:"type,omitempty"`
	Body json.RawMessage `json:"body"`
}

// Decode decodes the message's body into v.
func (m Message) Decode(v any) error { return json.Unmarshal(m.Body, v) }

// Joined is the server's room.joined.
type Joined struct {
	Room string `json:"room"`
	// Seq is the room's newest sequence number when the join took effect.
	Seq uint64 `json:"seq"`
	// Epoch names the room's numbering (a room forgotten and started anew
	// numbers from 1 with a new epoch).
	Epoch string `json:"epoch,omitempty"`
	// Members lists the members, or, in a room the server counts
	// (Presence "count"), the first of them.
	Members []Member `json:"members"`
	// Count is the number of members (of every server node).
	Count int `json:"count"`
	// Presence is "count" when the room has more members than the
	// server's PresenceLimit: Members is a first page and only the count
	// follows the room; "partial" when other nodes' members may be
	// missing from Members (they follow as presence); else empty.
	Presence string `json:"presence,omitempty"`
	// Recovered is true on a rejoin when every missed message follows.
	Recovered bool `json:"recovered"`
}

// Presence is a change of a room's members: the list after it, and what
// changed. Reset is true for the whole list of a (re)join, or of a room
// that the server lists again. Count is the number of members; Counted
// is true while the server counts the room's members instead of listing
// them (a room above its PresenceLimit): Members is then a first page,
// not kept current, and only Count changes.
type Presence struct {
	Room    string
	Members []Member
	Joins   []Member
	Leaves  []Member
	Reset   bool
	Count   int
	Counted bool
}

// Recover is what a rejoin after a reconnect recovered. Recovered true:
// every message after Since was delivered (by the time Recover is
// reported), up to Seq. False: messages were lost (the history did not go
// back far enough, or the room started over): reload, e.g. with History.
type Recover struct {
	Recovered bool
	Since     uint64
	Seq       uint64
}

// Room is a room of the server's built-in room protocol
// (troupe.Config{RoomProtocol: true}), one per name and client. A joined
// room stays joined across reconnects, to any node: it rejoins with the
// last sequence number it saw (and the room's epoch), receives what it
// missed, drops what it has already seen, and reports whether it recovered
// everything. Messages reach OnMessage in sequence order, each once.
type Room struct {
	c    *Client
	name string

	// Guarded by c.mu.
	meta      json.RawMessage
	want      bool // the application wants to be a member
	joined    bool // room.joined arrived on this connection
	hasSeq    bool
	lastSeq   uint64 // newest seq seen (when hasSeq)
	epoch     string
	joining   *joinAttempt // a join in flight
	recoverAt *Recover     // missed messages up to Seq are arriving
	catch     *catchUp     // a resync in progress (resync.go)
	leaving   int          // room.leave requests in flight
	members   []Member
	count     int  // the members, as the server last told (when counted)
	counted   bool // the server counts the members: members is a first page
	waiters   []chan joinResult

	onMessage  func(Message)
	onPresence func(Presence)
	onRecover  func(Recover)
	onError    func(error)
	custom     map[string][]*handler // HandleRoom's, by envelope type
}

type joinAttempt struct {
	since   uint64
	rejoin  bool
	refresh bool // for the member list alone, after a resync
}

type joinResult struct {
	joined Joined
	err    error
}

// Room returns the room of the given name (the same *Room for the same
// name).
func (c *Client) Room(name string) *Room {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rooms[name]
	if r == nil {
		r = &Room{c: c, name: name}
		c.rooms[name] = r
		c.roomOrder = append(c.roomOrder, r)
	}
	return r
}

// Name returns the room's name.
func (r *Room) Name() string { return r.name }

// OnMessage sets the function called with each new message, in sequence
// order, each once, across reconnects.
func (r *Room) OnMessage(fn func(Message)) { r.set(func() { r.onMessage = fn }) }

// OnPresence sets the function called after each (re)join with the whole
// member list (Reset), after each presence.diff, and with each count the
// server tells of a room it counts (presence.count) or lists again
// (presence.list, Reset).
func (r *Room) OnPresence(fn func(Presence)) { r.set(func() { r.onPresence = fn }) }

// OnRecover sets the function told, after each rejoin that follows a
// reconnect and after each catch-up that follows a room.resync (the
// server dropped messages this client did not read in time), whether
// every missed message was recovered.
func (r *Room) OnRecover(fn func(Recover)) { r.set(func() { r.onRecover = fn }) }

// OnError sets the function told when a rejoin after a reconnect was
// refused: the room is no longer joined.
func (r *Room) OnError(fn func(error)) { r.set(func() { r.onError = fn }) }

func (r *Room) set(f func()) {
	r.c.mu.Lock()
	f()
	r.c.mu.Unlock()
}

// LastSeq returns the newest sequence number seen (0 before the first
// join).
func (r *Room) LastSeq() uint64 {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.lastSeq
}

// Members returns the members as of the last room.joined, presence.diff
// and presence.list; in a room the server counts (Counted), the first
// page room.joined listed. Several sessions may share one identity, so an
// id may appear more than once.
func (r *Room) Members() []Member {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return slices.Clone(r.members)
}

// Count returns the number of members: as the server last told it in a
// room it counts, else the length of the list that diffs keep.
func (r *Room) Count() int {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.countLocked()
}

// Counted reports whether the server counts the room's members instead
// of listing them (a room above the server's PresenceLimit): Members is
// then a first page, and only Count follows the room.
func (r *Room) Counted() bool {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.counted
}

func (r *Room) countLocked() int {
	if r.counted {
		return r.count
	}
	return len(r.members)
}

// setMembersLocked takes the member list, count and mode of a room.joined
// or presence.list.
func (r *Room) setMembersLocked(members []Member, count int, counted bool) {
	r.members = slices.Clone(members)
	r.count, r.counted = count, counted
}

// resetMembersLocked replaces the member list and reports it whole.
func (r *Room) resetMembersLocked(members []Member, count int, counted bool) {
	r.setMembersLocked(members, count, counted)
	r.presenceLocked(Presence{Joins: slices.Clone(r.members), Reset: true})
}

// presenceLocked reports a change of the members to OnPresence.
func (r *Room) presenceLocked(ev Presence) {
	if fn := r.onPresence; fn != nil {
		ev.Room, ev.Members, ev.Count, ev.Counted = r.name, slices.Clone(r.members), r.countLocked(), r.counted
		r.c.post(func() { fn(ev) })
	}
}

func (r *Room) clearMembersLocked() {
	r.members, r.count, r.counted = nil, 0, false
}

// Joined reports whether the room is joined on the current connection.
func (r *Room) Joined() bool {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.joined
}

// Join joins the room, with meta (what the other members see of this one;
// nil: none) and returns the server's room.joined. Without a connection it
// waits for the next one, within ctx. The room stays joined, and rejoins
// after every reconnect, until Leave. The server's refusal is an *Error
// (code "forbidden", "room_full", …).
func (r *Room) Join(ctx context.Context, meta any) (Joined, error) {
	var rawMeta json.RawMessage
	if meta != nil {
		b, err := json.Marshal(meta)
		if err != nil {
			return Joined{}, err
		}
		rawMeta = b
	}
	c := r.c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Joined{}, ErrClosed
	}
	if r.want && r.joined {
		j := r.snapshotLocked()
		c.mu.Unlock()
		return j, nil
	}
	if !r.want {
		// A fresh join, not a resume.
		r.want, r.hasSeq, r.lastSeq, r.epoch = true, false, 0, ""
	}
	if rawMeta != nil {
		r.meta = rawMeta
	}
	w := make(chan joinResult, 1)
	r.waiters = append(r.waiters, w)
	if c.conn != nil && r.joining == nil {
		c.out = append(c.out, r.joinFrameLocked(false))
		c.wakeWriterLocked()
	}
	c.mu.Unlock()

	select {
	case res := <-w:
		return res.joined, res.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case res := <-w:
		return res.joined, res.err
	default:
	}
	r.waiters = slices.DeleteFunc(r.waiters, func(x chan joinResult) bool { return x == w })
	if !r.joined && len(r.waiters) == 0 {
		// Given up on: if the join goes through after all, it is undone.
		r.want = false
	}
	return Joined{}, ctx.Err()
}

func (r *Room) snapshotLocked() Joined {
	j := Joined{Room: r.name, Seq: r.lastSeq, Epoch: r.epoch, Members: slices.Clone(r.members), Count: r.countLocked(), Recovered: true}
	if r.counted {
		j.Presence = "count"
	}
	return j
}

// Leave leaves the room: no more messages, no rejoin after a reconnect.
// It returns once the server confirms, at once without a connection (the
// server forgot the membership with it).
func (r *Room) Leave(ctx context.Context) error {
	c := r.c
	c.mu.Lock()
	r.want = false
	r.recoverAt = nil
	r.endCatchUpLocked()
	r.failWaitersLocked(ErrLeft)
	if !r.joined && r.joining == nil {
		r.clearMembersLocked()
		c.mu.Unlock()
		return nil
	}
	r.leaving++
	c.mu.Unlock()

	_, err := c.roundTrip(ctx, "room.leave", map[string]string{"room": r.name}, requestOptions{noQueue: true})

	c.mu.Lock()
	r.leaving--
	if !r.want {
		r.joined = false
		r.clearMembersLocked()
	}
	c.mu.Unlock()
	var e *Error
	if errors.Is(err, ErrDisconnected) || errors.As(err, &e) && e.Code == "not_member" {
		return nil
	}
	return err
}

// History returns up to limit (0: the server's default, 50) earlier
// messages of the room, oldest first, with a sequence number below before
// (0: the newest).
func (r *Room) History(ctx context.Context, before uint64, limit int) ([]Message, error) {
	p := map[string]any{"room": r.name}
	if before > 0 {
		p["before"] = before
	}
	if limit > 0 {
		p["limit"] = limit
	}
	h, err := Request[struct {
		Messages []Message `json:"messages"`
	}](ctx, r.c, "room.history", p)
	return h.Messages, err
}

// joinFrameLocked builds a room.join (with since and epoch on a rejoin)
// and registers its answer.
func (r *Room) joinFrameLocked(rejoin bool) outFrame {
	c := r.c
	payload := struct {
		Room  string          `json:"room"`
		Meta  json.RawMessage `json:"meta,omitempty"`
		Since *uint64         `json:"since,omitempty"`
		Epoch string          `json:"epoch,omitempty"`
	}{Room: r.name, Meta: r.meta}
	att := &joinAttempt{}
	if rejoin && r.hasSeq {
		att.since, att.rejoin = r.lastSeq, true
		payload.Since = &att.since
		// The room's incarnation: numbers from an earlier one mean nothing.
		payload.Epoch = r.epoch
	}
	r.joining = att
	id := c.nextID.Add(1)
	data, _ := encode("room.join", payload, id)
	c.pending[id] = &pending{done: make(chan answer, 1), onAnswer: func(_ *envelope, err error) {
		if r.joining == att {
			r.joining = nil
		}
		if att.refresh {
			// A refresh refused leaves the membership as it is.
			if err != nil {
				r.onRefreshLocked(Joined{}, err)
			}
			return
		}
		if err == nil || errors.Is(err, ErrDisconnected) || errors.Is(err, ErrClosed) {
			return
		}
		// Refused: the application is told, and the room is not rejoined
		// again until Join is called.
		r.want = false
		r.failWaitersLocked(err)
		if fn := r.onError; att.rejoin && fn != nil {
			c.post(func() { fn(err) })
		}
	}}
	return outFrame{data: data, id: id}
}

func (r *Room) failWaitersLocked(err error) {
	for _, w := range r.waiters {
		w <- joinResult{err: err}
	}
	r.waiters = nil
}

func (r *Room) onConnectLocked() (outFrame, bool) {
	r.joined = false
	if !r.want {
		return outFrame{}, false
	}
	return r.joinFrameLocked(r.hasSeq), true
}

func (r *Room) onDisconnectLocked() {
	r.joined = false
	r.joining = nil
	r.recoverAt = nil
	r.endCatchUpLocked()
}

func (r *Room) onCloseLocked() {
	r.onDisconnectLocked()
	r.want = false
	r.failWaitersLocked(ErrClosed)
}

// onEnvelopeLocked takes in an envelope about this room, in the order the
// server sent them.
func (r *Room) onEnvelopeLocked(env *envelope) {
	switch env.Type {
	case "room.joined":
		var p Joined
		if json.Unmarshal(env.Payload, &p) == nil {
			r.onJoinedLocked(p)
		}
	case "room.message":
		var m Message
		if json.Unmarshal(env.Payload, &m) == nil {
			r.onMessageLocked(m)
		}
	case "presence.diff":
		var p struct {
			Joins  []Member `json:"joins"`
			Leaves []Member `json:"leaves"`
		}
		if r.joined && json.Unmarshal(env.Payload, &p) == nil {
			r.onPresenceLocked(p.Joins, p.Leaves)
		}
	case "presence.count", "presence.list":
		var p struct {
			Count   int      `json:"count"`
			Members []Member `json:"members"`
		}
		if !r.joined || json.Unmarshal(env.Payload, &p) != nil {
			break
		}
		if env.Type == "presence.list" {
			// The room is listed again: the whole list, as at a join.
			r.resetMembersLocked(p.Members, p.Count, false)
			break
		}
		// The room is counted: the list stops following it.
		r.count, r.counted = p.Count, true
		r.presenceLocked(Presence{})
	case "room.resync":
		r.onResyncLocked(env.Payload)
	case "room.left":
		var p struct {
			Reason *string `json:"reason"`
		}
		if json.Unmarshal(env.Payload, &p) == nil && p.Reason != nil {
			// The server removed this member (its room's logic kept
			// failing): not rejoined until Join.
			r.want = false
		}
		r.joined = false
		r.clearMembersLocked()
		r.endCatchUpLocked()
	case "error", "reply":
	default:
		for _, h := range r.custom[env.Type] {
			fn, payload := h.fn, env.Payload
			r.c.post(func() { fn(payload) })
		}
	}
}

// HandleRoom registers fn for the application's own envelopes of type typ
// about room r: those whose payload's "room" is r's name (a server
// Broadcast(room, typ, {room, …})), decoded into a T, in the order the
// server sent them, on the client's handler goroutine. A payload that does
// not decode goes to Options.OnError. It returns a function that removes
// the registration.
func HandleRoom[T any](r *Room, typ string, fn func(T)) (remove func()) {
	c := r.c
	h := &handler{fn: decoding(c, "room "+r.name+": "+typ, fn)}
	c.mu.Lock()
	if r.custom == nil {
		r.custom = make(map[string][]*handler)
	}
	r.custom[typ] = append(r.custom[typ], h)
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		r.custom[typ] = slices.DeleteFunc(r.custom[typ], func(x *handler) bool { return x == h })
		if len(r.custom[typ]) == 0 {
			delete(r.custom, typ)
		}
		c.mu.Unlock()
	}
}

func (r *Room) onJoinedLocked(p Joined) {
	c := r.c
	if !r.want {
		// A join that was given up on went through after all: undo it,
		// unless a leave is already on its way.
		if r.leaving == 0 {
			data, _ := encode("room.leave", map[string]string{"room": r.name}, nil)
			c.out = append(c.out, outFrame{data: data})
			c.wakeWriterLocked()
		}
		return
	}
	att := r.joining
	if att != nil && att.refresh {
		r.onRefreshLocked(p, nil)
		return
	}
	rejoin := att != nil && att.rejoin
	r.joined = true
	r.setMembersLocked(p.Members, p.Count, p.Presence == "count")
	if p.Epoch != "" {
		r.epoch = p.Epoch
	}
	// On a resume the missed messages follow (since < seq <= p.Seq), so the
	// mark stays at since; a room that restarted from a lower number is
	// followed from it.
	if rejoin {
		r.lastSeq = min(att.since, p.Seq)
	} else {
		r.lastSeq = p.Seq
	}
	r.hasSeq = true
	r.presenceLocked(Presence{Joins: slices.Clone(r.members), Reset: true})
	j := p
	j.Members = slices.Clone(p.Members)
	for _, w := range r.waiters {
		w <- joinResult{joined: j}
	}
	r.waiters = nil
	if rejoin {
		rec := Recover{Recovered: p.Recovered, Since: att.since, Seq: p.Seq}
		if p.Recovered && r.lastSeq < p.Seq {
			r.recoverAt = &rec
		} else {
			r.reportLocked(rec)
		}
	}
}

func (r *Room) reportLocked(rec Recover) {
	if fn := r.onRecover; fn != nil {
		r.c.post(func() { fn(rec) })
	}
}

func (r *Room) onMessageLocked(m Message) {
	if !r.joined {
		return
	}
	if r.hasSeq && m.Seq <= r.lastSeq {
		return // seen already
	}
	if r.catch != nil {
		if r.hasSeq && m.Seq > r.lastSeq+1 {
			r.catch.hold(m)
			return
		}
		r.deliverLocked(m)
		r.drainLocked()
		return
	}
	r.deliverLocked(m)
}

// deliverLocked hands m, the next message in order, to OnMessage.
func (r *Room) deliverLocked(m Message) {
	r.lastSeq, r.hasSeq = m.Seq, true
	if fn := r.onMessage; fn != nil {
		r.c.post(func() { fn(m) })
	}
	if ra := r.recoverAt; ra != nil && m.Seq >= ra.Seq {
		r.recoverAt = nil
		r.reportLocked(*ra)
	}
}

// onPresenceLocked applies a diff. Presence is a multiset (several sessions
// can share one identity); joins are applied before leaves, so that a diff
// that batches a member's join and leave ends without it.
func (r *Room) onPresenceLocked(joins, leaves []Member) {
	r.members = append(r.members, joins...)
	for _, m := range leaves {
		i := slices.IndexFunc(r.members, func(x Member) bool { return x.ID == m.ID && sameJSON(x.Meta, m.Meta) })
		if i < 0 {
			i = slices.IndexFunc(r.members, func(x Member) bool { return x.ID == m.ID })
		}
		if i >= 0 {
			r.members = slices.Delete(r.members, i, i+1)
		}
	}
	r.presenceLocked(Presence{Joins: joins, Leaves: leaves})
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y bytes.Buffer
	if json.Compact(&x, a) != nil || json.Compact(&y, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}
