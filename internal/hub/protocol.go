package hub

import (
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
	// Sized for the list it carries: a room of thousands lists them all
	// in listed mode, a page of them in counted mode.
	page, n := -1, st.count()
	if st.counted {
		page = min(presencePage, st.limit)
		st.noteJoinedCount(n)
	}
	p := wire.EnvelopeStart(make([]byte, 0, 128+len(st.name)+len(st.epoch)+len(o.ID)+st.membersSize(page)), "room.joined")
	p = append(p, `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"seq":`...)
	p = wire.AppendUint(p, st.seq)
	p = append(p, `,"epoch":`...)
	p = wire.AppendString(p, st.epoch)
	p = append(p, `,"count":`...)
	p = wire.AppendUint(p, uint64(n))
	p = append(p, `,"members":`...)
	p = st.appendMembers(p, page)
	switch {
	case st.counted:
		p = append(p, `,"presence":"count"`...)
	case partial:
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

// appendMembers appends the list of the members, at most max of them
// (negative: all): this node's in join order, from the entries kept since
// their joins, then the other nodes', ordered by node so that every
// listing is the same. An identity set after a join (Session.SetIdentity)
// makes the entry stale: it is encoded again. The check is cheap: an
// unchanged identity is the same string.
func (st *roomState) appendMembers(p []byte, max int) []byte {
	p = append(p, '[')
	n := 0
	for i, m := range st.order {
		if n == max {
			return append(p, ']')
		}
		if n > 0 {
			p = append(p, ',')
		}
		e := &st.ents[i]
		if id := MemberID(m); id != e.id {
			*e = newMemberEntry(m, st.meta[m.ID()])
		}
		p = append(p, e.entry...)
		n++
	}
	for _, node := range st.remoteNodes() {
		for _, e := range st.remote[node] {
			if n == max {
				return append(p, ']')
			}
			if n > 0 {
				p = append(p, ',')
			}
			p = append(p, e.Entry...)
			n++
		}
	}
	return append(p, ']')
}

// membersSize is about what appendMembers(p, max) appends.
func (st *roomState) membersSize(max int) int {
	size, n := 2, 0
	for i := range st.ents {
		if n == max {
			return size
		}
		size += len(st.ents[i].entry) + 1
		n++
	}
	for _, l := range st.remote {
		for _, e := range l {
			if n == max {
				return size
			}
			size += len(e.Entry) + 1
			n++
		}
	}
	return size
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
	st.flushPresence(false)
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
