package rooms

import (
	"encoding/json"

	"github.com/troupehq/troupe/actors"
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
}

type publishReq struct {
	s    *actors.Session
	body json.RawMessage
	id   json.RawMessage
}

type historyReq struct {
	s      *actors.Session
	before uint64
	limit  int
	id     json.RawMessage
}

// MemberID is how a member is named in the protocol: its identity if the
// application set one, else its session ID.
func MemberID(s *actors.Session) string {
	if id := s.Identity(); id != "" {
		return id
	}
	return s.ID()
}

// joined queues room.joined and, with Since, the missed messages on s.
func (st *roomState) joined(s *actors.Session, o *JoinOptions, fresh bool) {
	recovered := false
	var missed []Entry
	if o.Since != nil && fresh {
		if *o.Since <= st.seq {
			missed, recovered = st.hist.Since(*o.Since)
		}
	} else if o.Since != nil {
		recovered = true // already a member: it missed nothing
	}
	p := append(make([]byte, 0, 64+48*len(st.order)), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"seq":`...)
	p = wire.AppendUint(p, st.seq)
	p = append(p, `,"members":`...)
	p = st.appendMembers(p, st.order)
	if recovered {
		p = append(p, `,"recovered":true}`...)
	} else {
		p = append(p, `,"recovered":false}`...)
	}
	_ = s.SendText(wire.Envelope(nil, "room.joined", o.ID, p))
	for _, e := range missed {
		_ = s.SendText(messageFrame(e.Payload))
	}
}

// flushPresence sends one presence.diff with everyone who joined or left
// since the last one. Diffs are batched (Config.PresenceWindow) so that a
// burst of joins costs each member a few frames, not one per joiner; a
// member that joins and leaves inside one window is never announced. It runs
// before every room.message too, so no member ever sees a message from
// someone it has not been told about.
func (st *roomState) flushPresence() {
	if st.presenceTimer != nil {
		st.presenceTimer.Stop()
		st.presenceTimer = nil
	}
	var joins, leaves [][]byte
	var joiners []*actors.Session
	for _, m := range st.order {
		if _, ok := st.announced[m.ID()]; !ok {
			e := st.appendMember(nil, m)
			st.announced[m.ID()] = e
			joins = append(joins, e)
			joiners = append(joiners, m)
		}
	}
	for id, e := range st.announced {
		if _, ok := st.members[id]; !ok {
			delete(st.announced, id)
			leaves = append(leaves, e)
		}
	}
	if len(joins)+len(leaves) == 0 || len(st.order) == 0 {
		return
	}
	// Members that were there before get one shared diff. A new joiner
	// learnt the members of its time from room.joined; it gets the same
	// diff without its own entry, or nothing if that was all of it.
	diff := func(joins [][]byte) []byte {
		p := append(make([]byte, 0, 64), `{"room":`...)
		p = wire.AppendString(p, st.name)
		p = append(p, `,"joins":`...)
		p = appendList(p, joins)
		p = append(p, `,"leaves":`...)
		p = appendList(p, leaves)
		p = append(p, '}')
		return wire.Envelope(nil, "presence.diff", nil, p)
	}
	shared := actors.Frame{Data: diff(joins)}
	isNew := make(map[*actors.Session]bool, len(joiners))
	for _, j := range joiners {
		isNew[j] = true
	}
	for _, m := range st.order {
		if !isNew[m] {
			_ = m.SendFrame(shared)
		}
	}
	for i, j := range joiners {
		if len(joins) == 1 && len(leaves) == 0 {
			break
		}
		others := append(append(make([][]byte, 0, len(joins)-1), joins[:i]...), joins[i+1:]...)
		_ = j.SendText(diff(others))
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

func (st *roomState) appendMember(p []byte, m *actors.Session) []byte {
	p = append(p, `{"id":`...)
	p = wire.AppendString(p, MemberID(m))
	if meta := st.meta[m.ID()]; len(meta) > 0 {
		p = append(p, `,"meta":`...)
		p = append(p, meta...)
	}
	return append(p, '}')
}

func (st *roomState) appendMembers(p []byte, list []*actors.Session) []byte {
	p = append(p, '[')
	for i, m := range list {
		if i > 0 {
			p = append(p, ',')
		}
		p = st.appendMember(p, m)
	}
	return append(p, ']')
}

// publish stamps the next sequence number on a message, keeps it in the
// history, and sends it to every member, the sender included.
func (st *roomState) publish(r *publishReq) {
	if _, ok := st.members[r.s.ID()]; !ok {
		_ = r.s.SendText(wire.Error(r.id, "not_member", "not a member of room "+st.name))
		return
	}
	st.flushPresence()
	st.seq++
	p := append(make([]byte, 0, 64+len(r.body)), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"seq":`...)
	p = wire.AppendUint(p, st.seq)
	p = append(p, `,"from":`...)
	p = wire.AppendString(p, MemberID(r.s))
	p = append(p, `,"body":`...)
	p = append(p, r.body...)
	p = append(p, '}')
	st.hist.Append(st.seq, p)
	st.fanout(actors.Frame{Data: messageFrame(p)}, nil)
	if len(r.id) > 0 {
		a := append(make([]byte, 0, 48), `{"room":`...)
		a = wire.AppendString(a, st.name)
		a = append(a, `,"seq":`...)
		a = wire.AppendUint(a, st.seq)
		a = append(a, '}')
		_ = r.s.SendText(wire.Envelope(nil, "room.published", r.id, a))
	}
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
