package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/troupehq/troupe/internal/router"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/internal/wire"
	"github.com/troupehq/troupe/typed"
)

// Room logic beyond Handler: requests that the room answers (Manager.Call),
// timers owned by one incarnation of the room, lifecycle hooks, state that
// survives restarts and dormancy, and room.publish passing through the
// logic. The hooks are optional methods of the Handler, found by type
// assertion, so that a Handler written for OnJoin/OnLeave/OnMessage alone
// keeps compiling.

// starter, stopper, snapshotter, restorer and publishFilter are the
// optional methods of a Handler (see the root package's RoomHandler).
type (
	starter interface{ OnStart(r *Room) }
	stopper interface{ OnStop(r *Room) }
	// snapshotter's Snapshot is taken after every call of room logic that
	// returned: the state a restart or a wake from dormancy restores.
	snapshotter   interface{ Snapshot() any }
	restorer      interface{ Restore(state any) }
	publishFilter interface {
		OnPublish(r *Room, from *session.Session, body json.RawMessage) (json.RawMessage, error)
	}
)

// maxPendingCalls bounds the requests (Manager.Call) of one room waiting in
// its mailbox; beyond it a request is refused as unavailable, so that
// clients cannot queue without end on a room whose logic is slow.
const maxPendingCalls = 1024

// callReq is a member's request for the room's logic: fn runs in the room
// actor and its result answers id.
type callReq struct {
	s   *session.Session
	id  json.RawMessage
	typ string
	fn  func(r *Room, h Handler) (any, error)
}

// Call hands a request of member s to room's logic: fn runs inside the room
// actor, in the room's order, and what it returns answers s: with id, a
// {"type":"reply","id":id,"payload":…}; an error, an error envelope (the
// code of a *typed.Error, else handler_error); a panic, an "internal" error
// at once, before the room restarts. A sender that is not a member gets
// not_member; ErrNotMember is returned when the room does not exist.
func (m *Manager) Call(room string, s *session.Session, typ string, id json.RawMessage, fn func(r *Room, h Handler) (any, error)) error {
	ref, err := m.memberRef(room, s, id)
	if ref == nil {
		return err
	}
	pid, st := ref.pid, ref.st
	c := &callReq{s: s, id: id, typ: typ, fn: fn}
	switch st.calls.add(c) {
	case callsFull:
		_ = s.SendText(wire.Error(id, "unavailable", "room "+room+" is busy; try again"))
		return nil
	case callsClosed:
		_ = s.SendText(wire.Error(id, "unavailable", "room "+room+" stopped; try again"))
		return nil
	}
	m.root.Send(pid, c)
	return nil
}

// pendingCalls are the requests sent to a room's mailbox and not yet
// taken, so that a room that stops answers each of them (unavailable)
// rather than leave its sender waiting: protoactor drops what a stopped
// actor's mailbox still holds.
type pendingCalls struct {
	mu     sync.Mutex
	calls  map[*callReq]struct{}
	closed bool // the room is stopping: no more requests
}

// Results of pendingCalls.add.
const (
	callsAdded = iota
	callsFull
	callsClosed
)

func (p *pendingCalls) add(c *callReq) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return callsClosed
	case len(p.calls) >= maxPendingCalls:
		return callsFull
	}
	if p.calls == nil {
		p.calls = make(map[*callReq]struct{})
	}
	p.calls[c] = struct{}{}
	return callsAdded
}

// take reports whether c was pending (and is no longer).
func (p *pendingCalls) take(c *callReq) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.calls[c]
	delete(p.calls, c)
	return ok
}

// close refuses further requests and returns those still pending.
func (p *pendingCalls) close() []*callReq {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	left := make([]*callReq, 0, len(p.calls))
	for c := range p.calls {
		left = append(left, c)
	}
	p.calls = nil
	return left
}

// open takes requests again, for a new incarnation of the room.
func (p *pendingCalls) open() {
	p.mu.Lock()
	p.closed, p.calls = false, nil
	p.mu.Unlock()
}

// handleCall runs a member's request.
func (a *roomActor) handleCall(c *callReq) {
	st := a.st
	if !st.calls.take(c) {
		return // answered when the room began stopping
	}
	if a.h == nil {
		_ = c.s.SendText(wire.Error(c.id, typed.CodeUnknownType, "room "+st.name+" has no logic for "+c.typ))
		return
	}
	if _, ok := st.members[c.s.ID()]; !ok {
		_ = c.s.SendText(wire.Error(c.id, "not_member", "not a member of room "+st.name))
		return
	}
	var out any
	var err error
	a.callFor(c.s, c.id, c.typ, func(r *Room) { out, err = c.fn(r, a.h) })
	switch {
	case err != nil:
		e := router.AsError(err)
		_ = c.s.SendText(wire.Error(c.id, e.Code, e.Message))
	case len(c.id) > 0 && string(c.id) != "null":
		b, err := typed.EncodeWithID("reply", out, c.id)
		if err != nil {
			a.m.logError(st.name, fmt.Errorf("room %s: reply to %q: %w", st.name, c.typ, err))
			b = wire.Error(c.id, typed.CodeInternal, fmt.Sprintf("internal error handling %q", c.typ))
		}
		_ = c.s.SendText(b)
	}
}

// callFor is call for logic that answers s: a panic answers id with
// "internal" at once, then restarts the room as any panic of room logic
// does.
func (a *roomActor) callFor(s *session.Session, id json.RawMessage, typ string, fn func(r *Room)) {
	defer func() {
		if v := recover(); v != nil {
			_ = s.SendText(wire.Error(id, typed.CodeInternal, fmt.Sprintf("internal error handling %q", typ)))
			panic(v)
		}
	}()
	a.call(fn)
}

// filterPublish passes a member's room.publish through the room's
// OnPublish, if it has one: it returns false when the logic refused it (the
// sender has been answered).
func (a *roomActor) filterPublish(r *publishReq) bool {
	f, ok := a.h.(publishFilter)
	if !ok || r.s == nil {
		return true
	}
	if _, member := a.st.members[r.s.ID()]; !member {
		return true // st.publish answers not_member
	}
	var body json.RawMessage
	var err error
	a.callFor(r.s, r.id, "room.publish", func(room *Room) { body, err = f.OnPublish(room, r.s, r.body) })
	switch {
	case err != nil:
		e := router.AsError(err)
		_ = r.s.SendText(wire.Error(r.id, e.Code, e.Message))
		return false
	case len(body) == 0 || !json.Valid(body):
		_ = r.s.SendText(wire.Error(r.id, typed.CodeInternal, "room logic published no valid JSON body"))
		a.m.logError(a.st.name, fmt.Errorf("room %s: OnPublish returned a body that is not JSON: %q", a.st.name, body))
		return false
	}
	r.body = body
	return true
}

// started runs when an incarnation of the room starts: it hands the logic
// the state the last one kept, then OnStart.
func (a *roomActor) started() {
	if a.h == nil {
		return
	}
	if rs, ok := a.h.(restorer); ok && a.st.logic != nil {
		// Taken out while Restore runs: a state that makes Restore panic
		// is not handed to every later incarnation.
		state := a.st.logic
		a.st.logic = nil
		a.call(func(*Room) { rs.Restore(state) })
		a.st.logic = state
	}
	if s, ok := a.h.(starter); ok {
		a.call(s.OnStart)
	}
}

// stopping runs when the room stops: OnStop, then its timers go. A panic
// in OnStop is told to OnError; the room is stopping anyway.
func (a *roomActor) stopping() {
	if s, ok := a.h.(stopper); ok {
		func() {
			defer func() {
				if v := recover(); v != nil {
					a.m.logError(a.st.name, &typed.PanicError{Room: a.st.name, Value: v})
				}
			}()
			a.call(s.OnStop)
		}()
	}
	a.stopTimers()
	a.done = true
	// What the mailbox still holds is dropped with the actor: answer the
	// requests among it.
	for _, c := range a.st.calls.close() {
		_ = c.s.SendText(wire.Error(c.id, "unavailable", "room "+a.st.name+" stopped; try again"))
	}
}

// snapshot keeps the logic's state after a call that returned.
func (a *roomActor) snapshot() {
	if s, ok := a.h.(snapshotter); ok {
		a.st.logic = s.Snapshot()
	}
}

// evict removes every member of a room that the supervisor gave up on:
// each gets room.left with the reason.
func (a *roomActor) evict(reason string) {
	st := a.st
	p := append(make([]byte, 0, 64), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"reason":`...)
	p = wire.AppendString(p, reason)
	p = append(p, '}')
	f := wire.Envelope(nil, "room.left", nil, p)
	for _, s := range append([]*session.Session(nil), st.order...) {
		st.remove(s)
		a.m.index.remove(s, st.name)
		delete(st.meta, s.ID())
		_ = s.SendText(f)
	}
	st.resetPresence()
}

// roomTimer is a timer of one incarnation of a room (Room.After,
// Room.Every). Its message goes through the room's mailbox and is dropped
// there unless the incarnation that set it is still the running one.
type roomTimer struct {
	owner *roomActor
	msg   any
	every time.Duration

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
	queued  bool // a tick is in the mailbox: Every does not pile them up
}

// timerFired is a roomTimer's message in the room's mailbox.
type timerFired struct{ t *roomTimer }

func (a *roomActor) startTimer(d, every time.Duration, msg any) func() {
	t := &roomTimer{owner: a, msg: msg, every: every}
	if a.done {
		return func() {}
	}
	if a.timers == nil {
		a.timers = make(map[*roomTimer]struct{})
	}
	if len(a.timers) >= a.pruneAt {
		a.pruneTimers()
	}
	a.timers[t] = struct{}{}
	root, self := a.m.root, a.self
	t.mu.Lock()
	t.t = time.AfterFunc(d, func() {
		t.mu.Lock()
		if t.stopped || t.queued {
			if !t.stopped && t.every > 0 {
				t.t.Reset(t.every)
			}
			t.mu.Unlock()
			return
		}
		t.queued = true
		if t.every > 0 {
			t.t.Reset(t.every)
		}
		t.mu.Unlock()
		root.Send(self, &timerFired{t: t})
	})
	t.mu.Unlock()
	return t.stop
}

// stop cancels t: no message of it is handled after stop returns (one in
// the mailbox already is dropped there).
func (t *roomTimer) stop() {
	t.mu.Lock()
	t.stopped = true
	t.t.Stop()
	t.mu.Unlock()
}

// pruneTimers forgets the timers that were cancelled: logic that sets a
// timer per message and cancels the last one (a deadline pushed back by
// every bid) keeps only the live ones. It runs when the set has doubled
// since the last prune, so its cost per timer is constant.
func (a *roomActor) pruneTimers() {
	for t := range a.timers {
		t.mu.Lock()
		stopped := t.stopped
		t.mu.Unlock()
		if stopped {
			delete(a.timers, t)
		}
	}
	a.pruneAt = max(minPruneAt, 2*len(a.timers))
}

// minPruneAt is the size of the timer set below which it is not pruned.
const minPruneAt = 64

func (a *roomActor) stopTimers() {
	for t := range a.timers {
		t.stop()
	}
	a.timers = nil
}

// fired hands a timer's message to OnMessage, if the timer is still this
// incarnation's and has not been stopped.
func (a *roomActor) fired(m *timerFired) {
	t := m.t
	t.mu.Lock()
	t.queued = false
	live := !t.stopped && t.owner == a && !a.done
	t.mu.Unlock()
	if !live {
		return
	}
	if t.every == 0 {
		delete(a.timers, t)
	}
	a.call(func(r *Room) { a.h.OnMessage(r, nil, t.msg) })
}

// After delivers msg to the room's OnMessage (with from nil) once d has
// passed, through the room's mailbox, in order with everything else. The
// timer belongs to this incarnation of the room: it is cancelled when the
// room stops or restarts, and its message never reaches a later one
// (OnStart sets timers again). The returned function cancels it.
func (r *Room) After(d time.Duration, msg any) (cancel func()) {
	return r.a.startTimer(d, 0, msg)
}

// Every is After repeating every d (which must be positive) until
// cancelled or the room stops or restarts. A tick that finds the previous
// one still waiting in the mailbox is skipped, as a time.Ticker drops ticks
// for a slow reader.
func (r *Room) Every(d time.Duration, msg any) (cancel func()) {
	if d <= 0 {
		panic("troupe: non-positive interval for Room.Every")
	}
	return r.a.startTimer(d, d, msg)
}

// Has reports whether s is a member of the room (on this node).
func (r *Room) Has(s *session.Session) bool {
	_, ok := r.st.members[s.ID()]
	return ok
}

// MemberID is how the room protocol names s to the other members (the id
// in room.joined and presence.diff, the from of its messages): its identity
// if the application set one, else its session ID.
func (r *Room) MemberID(s *session.Session) string { return MemberID(s) }

// Publish puts a message of the room's logic into the room's numbered
// stream, as room.publish does for a member: it gets the next seq, goes
// into the history (resume, room.history) and reaches every member in the
// stream's order, after any pending presence.diff. Its room.message payload
// is {"room","seq","type":typ,"body":body}: "type" (left out when empty)
// says what it is, and it has no "from". Under the room protocol only
// (else ErrNoProtocol). With a Backplane it goes through the room's log
// like a member's message; a failure to append it is told to OnError.
func (r *Room) Publish(typ string, body any) error {
	if !r.st.proto {
		return ErrNoProtocol
	}
	var b []byte
	switch v := body.(type) {
	case json.RawMessage:
		b = bytes.Clone(v) // under a backplane it is read later, elsewhere
	case []byte:
		b = bytes.Clone(v)
	default:
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	if !json.Valid(b) {
		return fmt.Errorf("troupe: room %s: published body is not JSON", r.st.name)
	}
	r.st.publish(r.m, &publishReq{typ: typ, body: b})
	return nil
}

// logicPayload is room.message's payload for a message of the room's
// logic.
func (st *roomState) logicPayload(seq uint64, typ string, body []byte) []byte {
	p := append(make([]byte, 0, 64+len(body)), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"seq":`...)
	p = wire.AppendUint(p, seq)
	if typ != "" {
		p = append(p, `,"type":`...)
		p = wire.AppendString(p, typ)
	}
	p = append(p, `,"body":`...)
	p = append(p, body...)
	return append(p, '}')
}

// payload is r's room.message payload with sequence number seq.
func (r *publishReq) payload(st *roomState, seq uint64) []byte {
	if r.s == nil {
		return st.logicPayload(seq, r.typ, r.body)
	}
	return st.messagePayload(seq, MemberID(r.s), r.mid, r.body)
}

// refuse answers a publish that was not taken: its sender, or OnError for
// the room's own.
func (r *publishReq) refuse(m *Manager, st *roomState, code, msg string) {
	if r.s != nil {
		_ = r.s.SendText(wire.Error(r.id, code, msg))
		return
	}
	m.logError(st.name, fmt.Errorf("%s: room %s: %s", code, st.name, msg))
}
