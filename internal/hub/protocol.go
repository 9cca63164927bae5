package hub

import (
	"bytes"
	"encoding/json"

	"github.com/troupehq/troupe/rooms"

	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/internal/wire"
)

// The built-in room protocol (Config.Protocol): every room message gets the
// next sequence number of its room and goes into the room's history, joins
// can resume from a sequence number, and members see each other come and go.
// The room actor is the single writer of all of it, so the sequence has no
// gaps and every member sees the same order.

// JoinOptions are the protocol's extras for Manager.JoinWith.
type JoinOptions struct {
	// Since, when set, asks for the messages after this sequence number:
	// they are queued right after room.joined, before any newer message.
	Since *uint64
	// Meta is what the other members see about this one (raw JSON).
	Meta json.RawMessage
	// ID is the request id room.joined answers.
	ID json.RawMessage
	// Epoch is the room incarnation the client's Since counts in (from an
	// earlier room.joined). A room whose state was forgotten and started
	// again numbers from 1 anew: a Since from another epoch cannot be
	// recovered.
	Epoch string
}

type publishReq struct {
	s    *session.Session // nil for the room logic's own (Room.Publish)
	typ  string           // of the room logic's own
	body json.RawMessage
	id   json.RawMessage
	mid  string // the client's message id (see once.go); "" without
}

type historyReq struct {
	s      *session.Session
	before uint64
	limit  int
	id     json.RawMessage
}

// MemberID is how a member is named in the protocol: its identity if the
// application set one, else its session ID.
func MemberID(s *session.Session) string {
	if id := s.Identity(); id != "" {
		return id
	}
	return s.ID()
}

// joined queues room.joined and, with Since, the missed messages on s.
//
// partial marks the list as possibly missing members of other nodes (see
// syncPresence).
func (st *roomState) joined(s *session.Session, o *JoinOptions, partial bool) {
	recovered := false
	var missed []rooms.Entry
	if o.Since != nil && *o.Since <= st.seq && (o.Epoch == "" || o.Epoch == st.epoch) {
		missed, recovered = st.hist.Since(*o.Since)
	}
	// Sized for all of it: a room of thousands lists them all.
	size := 128 + len(st.name) + len(st.epoch) + len(o.ID) + len(st.ents)
	for _, e := range st.ents {
		size += len(e.entry)
	}
	p := wire.EnvelopeStart(make([]byte, 0, size), "room.joined")
	p = append(p, `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"seq":`...)
	p = wire.AppendUint(p, st.seq)
	p = append(p, `,"epoch":`...)
	p = wire.AppendString(p, st.epoch)
	p = append(p, `,"members":`...)
	p = st.appendMembers(p)
	if len(st.remote) > 0 {
		p = st.appendRemote(p[:len(p)-1], len(st.order) > 0)
		p = append(p, ']')
	}
	if partial {
		p = append(p, `,"presence":"partial"`...)
	}
	if recovered {
		p = append(p, `,"recovered":true}`...)
	} else {
		p = append(p, `,"recovered":false}`...)
	}
	_ = s.SendText(wire.EnvelopeEnd(p, o.ID))
	for _, e := range missed {
		st.sendMessage(s, messageFrame(e.Payload), e.Seq)
	}
}

// presenceEvent is a join or leave not yet told to the other members: of a
// member of this node or, with a Backplane, of another node.
type presenceEvent struct {
	key   string // the member's session ID
	join  bool
	entry []byte // {"id","meta"} as the others see it
}

// flushPresence sends the presence.diff of the joins and leaves since the
// last one. Diffs are gathered (Config.PresenceWindow) so that a burst of
// joins costs each member a few frames, not one per joiner, and they are
// exact: each client is told the difference between the members it knew
// and the members now. Members from before the window share one diff; a
// member that joined inside the window knew the members of its room.joined,
// so it gets the changes after its own join. A member that joins and leaves
// inside one window is never announced to those who never saw it. It runs
// before every room.message, so no member sees a message from someone it
// has not been told about.
func (st *roomState) flushPresence() {
	if st.presenceTimer != nil {
		st.presenceTimer.Stop()
		st.presenceTimer = nil
	}
	if st.localChanged && st.bp != nil {
		st.announce()
	}
	st.localChanged = false
	events := st.events
	st.events = nil
	joinedAt := st.joinedAt
	st.joinedAt = nil
	if len(events) == 0 || len(st.order) == 0 {
		return
	}
	shared := st.diff(events)
	for _, m := range st.order {
		p, isNew := joinedAt[m]
		switch {
		case !isNew && shared != nil:
			_ = session.SendShared(m, shared)
		case isNew:
			if d := st.diff(events[p+1:]); d != nil {
				_ = session.SendShared(m, d)
			}
		}
	}
}

// diff encodes the net change that events make: a member whose first event
// is a join was absent before them, one whose first is a leave was present;
// its last event says whether it is present now. It returns nil if nothing
// changed.
func (st *roomState) diff(events []presenceEvent) *session.Shared {
	type change struct{ first, last int }
	order := make([]string, 0, len(events))
	changes := make(map[string]*change, len(events))
	for i, e := range events {
		if c := changes[e.key]; c != nil {
			c.last = i
		} else {
			changes[e.key] = &change{first: i, last: i}
			order = append(order, e.key)
		}
	}
	var joins, leaves [][]byte
	for _, k := range order {
		c := changes[k]
		first, last := events[c.first], events[c.last]
		was, is := !first.join, last.join
		switch {
		case !was && is:
			joins = append(joins, last.entry)
		case was && !is:
			leaves = append(leaves, last.entry)
		case was && is && !bytes.Equal(first.entry, last.entry):
			// Left and came back with other meta: replace the entry.
			leaves = append(leaves, first.entry)
			joins = append(joins, last.entry)
		}
	}
	if len(joins)+len(leaves) == 0 {
		return nil
	}
	p := append(make([]byte, 0, 64), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"joins":`...)
	p = appendList(p, joins)
	p = append(p, `,"leaves":`...)
	p = appendList(p, leaves)
	p = append(p, '}')
	return st.sharePresence(wire.Envelope(nil, "presence.diff", nil, p))
}

// notePresence records a join or leave for the next presence.diff; entry
// is the member's as the others see it, or nil to encode it now.
func (st *roomState) notePresence(s *session.Session, join bool, entry []byte) {
	if join {
		if st.joinedAt == nil {
			st.joinedAt = make(map[*session.Session]int)
		}
		st.joinedAt[s] = len(st.events)
	} else {
		delete(st.joinedAt, s)
	}
	if entry == nil {
		entry = st.appendMember(nil, s)
	}
	st.events = append(st.events, presenceEvent{key: s.ID(), join: join, entry: entry})
	st.localChanged = true
}

func appendList(p []byte, items [][]byte) []byte {
	p = append(p, '[')
	for i, e := range items {
		if i > 0 {
			p = append(p, ',')
		}
		p = append(p, e...)
	}
	return append(p, ']')
}

func (st *roomState) appendMember(p []byte, m *session.Session) []byte {
	return appendEntry(p, MemberID(m), st.meta[m.ID()])
}

// appendEntry appends a member's {"id","meta"} as the others see it.
func appendEntry(p []byte, id string, meta json.RawMessage) []byte {
	p = append(p, `{"id":`...)
	p = wire.AppendString(p, id)
	if len(meta) > 0 {
		p = append(p, `,"meta":`...)
		p = append(p, meta...)
	}
	return append(p, '}')
}

// memberEntry is a member's entry in room.joined, and the member ID it
// was encoded with.
type memberEntry struct {
	id    string
	entry []byte
}

func newMemberEntry(s *session.Session, meta json.RawMessage) memberEntry {
	id := MemberID(s)
	return memberEntry{id: id, entry: appendEntry(nil, id, meta)}
}

// appendMembers appends the list of the members in join order from the
// entries kept since their joins. An identity set after a join
// (Session.SetIdentity) makes the entry stale: it is encoded again. The
// check is cheap: an unchanged identity is the same string.
func (st *roomState) appendMembers(p []byte) []byte {
	p = append(p, '[')
	for i, m := range st.order {
		if i > 0 {
			p = append(p, ',')
		}
		e := &st.ents[i]
		if id := MemberID(m); id != e.id {
			*e = newMemberEntry(m, st.meta[m.ID()])
		}
		p = append(p, e.entry...)
	}
	return append(p, ']')
}

// publish stamps the next sequence number on a message, keeps it in the
// history, and sends it to every member, the sender included.
func (st *roomState) publish(m *Manager, r *publishReq) {
	if r.s != nil {
		if _, ok := st.members[r.s.ID()]; !ok {
			_ = r.s.SendText(wire.Error(r.id, "not_member", "not a member of room "+st.name))
			return
		}
	}
	if st.bp != nil {
		st.enqueuePublish(m, r)
		return
	}
	st.flushPresence()
	st.seq++
	p := r.payload(st, st.seq)
	st.hist.Append(st.seq, p)
	st.noteMid(m, st.seq, r.mid)
	st.account(m)
	st.fanoutMessage(messageFrame(p), st.seq)
	if r.s != nil && len(r.id) > 0 {
		_ = r.s.SendText(publishedFrame(st.name, st.seq, r.id))
	}
}

// messagePayload encodes room.message's payload. The mid, when there is
// one, comes right before the body (payloadMid reads it there).
func (st *roomState) messagePayload(seq uint64, from, mid string, body []byte) []byte {
	p := append(make([]byte, 0, 64+len(mid)+len(body)), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"seq":`...)
	p = wire.AppendUint(p, seq)
	p = append(p, `,"from":`...)
	p = wire.AppendString(p, from)
	if mid != "" {
		p = append(p, midKey...)
		p = wire.AppendString(p, mid)
	}
	p = append(p, `,"body":`...)
	p = append(p, body...)
	return append(p, '}')
}

// publishedFrame is room.published, the answer to a room.publish with id.
func publishedFrame(room string, seq uint64, id json.RawMessage) []byte {
	a := append(make([]byte, 0, 48), `{"room":`...)
	a = wire.AppendString(a, room)
	a = append(a, `,"seq":`...)
	a = wire.AppendUint(a, seq)
	a = append(a, '}')
	return wire.Envelope(nil, "room.published", id, a)
}

// history answers room.history with up to limit messages below before.
func (st *roomState) history(r *historyReq) {
	if _, ok := st.members[r.s.ID()]; !ok {
		_ = r.s.SendText(wire.Error(r.id, "not_member", "not a member of room "+st.name))
		return
	}
	entries := st.hist.Before(r.before, r.limit)
	p := append(make([]byte, 0, 64), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"messages":[`...)
	for i, e := range entries {
		if i > 0 {
			p = append(p, ',')
		}
		p = append(p, e.Payload...)
	}
	p = append(p, "]}"...)
	_ = r.s.SendText(wire.Envelope(nil, "room.history", r.id, p))
}

func messageFrame(payload []byte) []byte {
	return wire.Envelope(make([]byte, 0, len(payload)+40), "room.message", nil, payload)
}
