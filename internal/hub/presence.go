package hub

import (
	"bytes"

	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/internal/wire"
)

// Presence under the room protocol has two modes.
//
// Listed, while the room is small: room.joined lists every member, and
// every join and leave reaches every member in a presence.diff, gathered
// per presence window.
//
// Counted, once the room has more than Config.PresenceLimit members (of
// every node, as this node knows them): in a room of N members a join storm
// would otherwise write N copies of a diff that names every joiner of the
// window (bytes growing as N x joins), and room.joined would list all N to
// every joiner. In counted mode room.joined carries the count and a first
// page of presencePage members (in join order), nobody gets a diff, and at
// most once per presence window, when the count changed, every member gets
// one shared presence.count: the work of a window is one small frame per
// member, whatever the number of joins. The switch to counted mode sends
// every member a presence.count (its list is no longer kept current); the
// room goes back to listed mode only once it has fallen to half the limit
// (one member at least), so that a room at the edge does not flap, and
// every member then gets one presence.list with every member, after which
// diffs resume. Mode switches, like diffs, go out before the next
// room.message.

// presencePage is how many members room.joined lists in counted mode (or
// the limit, if it is smaller).
const presencePage = 100

// DefaultPresenceLimit is the default of Config.PresenceLimit.
const DefaultPresenceLimit = 1000

// presenceEvent is a join or leave not yet told to the other members: of a
// member of this node or, with a Backplane, of another node.
type presenceEvent struct {
	key   string // the member's session ID
	join  bool
	entry []byte // {"id","meta"} as the others see it
}

// count is the room's members as this node knows them: its own and those
// the other nodes announced.
func (st *roomState) count() int {
	n := len(st.order)
	for _, l := range st.remote {
		n += len(l)
	}
	return n
}

// checkMode switches the presence mode when the count crossed the limit
// (more than it: counted) or half of it (at most that: listed). The
// events gathered so far are dropped: the next flush tells every member
// the room's state in the new mode instead.
func (st *roomState) checkMode() {
	if st.limit <= 0 {
		return
	}
	n := st.count()
	switch {
	case !st.counted && n > st.limit:
		st.counted = true
	case st.counted && n <= max(st.limit/2, 1):
		st.counted = false
	default:
		return
	}
	st.remodeled = true
	st.events, st.joinedAt, st.toldAt = nil, nil, 0
}

// resetPresence forgets the presence state of a room that has no member
// left on this node.
func (st *roomState) resetPresence() {
	st.events, st.joinedAt, st.toldAt = nil, nil, 0
	st.counted, st.remodeled, st.toldCount, st.joinedMin, st.joinedMax = false, false, 0, -1, 0
}

// noteJoinedCount notes the count a room.joined told in counted mode: the
// next flush tells the count if it is not what every member was told.
func (st *roomState) noteJoinedCount(n int) {
	if st.joinedMin < 0 || n < st.joinedMin {
		st.joinedMin = n
	}
	st.joinedMax = max(st.joinedMax, n)
}

// countKnown says whether every member was told the count n: the last
// presence.count, and every room.joined since, said n.
func (st *roomState) countKnown(n int) bool {
	return st.toldCount == n && (st.joinedMin < 0 || st.joinedMin == n && st.joinedMax == n)
}

// notePresence records a join or leave for the next presence.diff; entry
// is the member's as the others see it, or nil to encode it now. In
// counted mode nothing is recorded: the count is the room's.
func (st *roomState) notePresence(s *session.Session, join bool, entry []byte) {
	st.localChanged = true
	st.checkMode()
	if st.counted {
		return
	}
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
}

// flushPresence tells the members the presence changes since the last
// flush. It runs when the presence window ends (due) and before every
// room.message, so that no member sees a message from someone it has not
// been told about. In counted mode members are told of nobody, so a
// message does not wait for the count: it waits for its window, and a
// chatty room does not get a count before every message.
func (st *roomState) flushPresence(due bool) {
	if st.counted && !st.remodeled && !due {
		// The count waits for its window; the other nodes are told of
		// this node's changes before the message, as in listed mode.
		if st.localChanged && st.bp != nil {
			st.announce()
			st.localChanged = false
		}
		return
	}
	st.stopPresenceTimers()
	if st.localChanged && st.bp != nil {
		st.announce()
	}
	st.localChanged = false
	events, joinedAt, remodeled := st.events, st.joinedAt, st.remodeled
	st.events, st.joinedAt, st.remodeled, st.toldAt = nil, nil, false, 0
	n := st.count()
	known := st.countKnown(n)
	st.joinedMin, st.joinedMax = -1, 0
	if len(st.order) == 0 {
		return
	}
	switch {
	case st.counted:
		if remodeled || !known {
			st.toldCount = n
			st.fanoutPresence(st.countFrame(n))
		}
	case remodeled:
		st.fanoutPresence(st.listFrame())
	default:
		st.flushDiffs(events, joinedAt)
	}
}

// stopPresenceTimers stops the window's timers: it is flushed, or the room
// stops. A flush of theirs that fires anyway is stale (roomActor.Receive).
func (st *roomState) stopPresenceTimers() {
	if st.presenceTimer != nil {
		st.presenceTimer.Stop()
		st.presenceTimer = nil
	}
	if st.joinersTimer != nil {
		st.joinersTimer.Stop()
		st.joinersTimer = nil
	}
	st.held = false
}

// flushJoiners tells the members that joined a window pacing holds (see
// roomActor.presenceWindow), about one window after the first of them
// joined, the changes since their join: those who know the same events
// share a diff, as at any flush. They then know the window's events so
// far, and at the pacing's end share one diff from here with those told
// at the same flush. The members from before the window wait for the
// pacing's end.
func (st *roomState) flushJoiners() {
	n := len(st.events)
	if st.counted || n == 0 {
		return
	}
	need := make([]bool, n+1)
	fresh := false
	for _, p := range st.joinedAt {
		if p >= st.toldAt {
			need[p+1], fresh = true, true
		}
	}
	if !fresh {
		return
	}
	diffs := st.suffixDiffs(st.events, need)
	shares := make(map[int]*session.Shared)
	for _, m := range st.order {
		p, ok := st.joinedAt[m]
		if !ok || p < st.toldAt {
			continue
		}
		st.joinedAt[m] = n - 1 // it now knows events[:n]
		st.sendSuffix(m, diffs, p+1, shares)
	}
	st.toldAt = n
}

// fanoutPresence queues a presence frame, room traffic, on every member.
func (st *roomState) fanoutPresence(sh *session.Shared) {
	for _, m := range st.order {
		_ = session.SendShared(m, sh)
	}
}

// countFrame is presence.count: the room's count, in counted mode.
func (st *roomState) countFrame(n int) *session.Shared {
	p := append(make([]byte, 0, 32+len(st.name)), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"count":`...)
	p = wire.AppendUint(p, uint64(n))
	p = append(p, '}')
	return st.sharePresence(wire.Envelope(nil, "presence.count", nil, p))
}

// listFrame is presence.list: every member, as the room goes back to
// listed mode.
func (st *roomState) listFrame() *session.Shared {
	p := append(make([]byte, 0, 48+len(st.name)+st.membersSize(-1)), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"count":`...)
	p = wire.AppendUint(p, uint64(st.count()))
	p = append(p, `,"members":`...)
	p = st.appendMembers(p, -1)
	p = append(p, '}')
	return st.sharePresence(wire.Envelope(nil, "presence.list", nil, p))
}

// flushDiffs sends the presence.diffs of events. Diffs are gathered
// (Config.PresenceWindow) so that a burst of joins costs each member a few
// frames, not one per joiner, and they are exact: each client is told the
// difference between the members it knew and the members now. Members
// from before the window share one diff; a member that joined inside the
// window knew the members of its room.joined, so it gets the changes after
// its own join, and one told at a flushJoiners the changes since that
// flush (joinedAt holds the last event each knows). A member that joins
// and leaves inside one window is never announced to those who never saw
// it.
//
// The diffs of every suffix a member needs come from one pass from the
// window's end: walking back, each event becomes the first of its member
// in the suffix that starts there (and the one it replaces no longer is),
// and the last of its member is the one met first. A suffix's diff is then
// read off its members' first and last events.
func (st *roomState) flushDiffs(events []presenceEvent, joinedAt map[*session.Session]int) {
	if len(events) == 0 {
		return
	}
	// need[i]: some member knew the room as of events[:i] (before the
	// window: 0).
	need := make([]bool, len(events)+1)
	need[0] = true
	for _, p := range joinedAt {
		need[p+1] = true
	}
	diffs := st.suffixDiffs(events, need)
	shares := make(map[int]*session.Shared, len(diffs))
	for _, m := range st.order {
		p, isNew := joinedAt[m]
		if !isNew {
			p = -1
		}
		st.sendSuffix(m, diffs, p+1, shares)
	}
}

// sendSuffix queues on m the diff of the events from i on (diffs[i]), if
// anything changed there: one Shared per suffix, kept in shares for the
// members that need the same.
func (st *roomState) sendSuffix(m *session.Session, diffs [][]byte, i int, shares map[int]*session.Shared) {
	d := diffs[i]
	if d == nil {
		return
	}
	sh := shares[i]
	if sh == nil {
		sh = st.sharePresence(d)
		shares[i] = sh
	}
	_ = session.SendShared(m, sh)
}

// suffixDiffs returns the presence.diff of events[i:] for each i that
// need marks (nil where nothing changed).
func (st *roomState) suffixDiffs(events []presenceEvent, need []bool) [][]byte {
	diffs := make([][]byte, len(events)+1)
	// first[j]: events[j] is its member's first in the current suffix,
	// whose last is events[last[j]].
	first := make([]bool, len(events))
	last := make([]int, len(events))
	seen := make(map[string]int, len(events)) // member -> its first event in the suffix
	for i := len(events) - 1; i >= 0; i-- {
		k := events[i].key
		if j, ok := seen[k]; ok {
			first[j] = false
			last[i] = last[j]
		} else {
			last[i] = i
		}
		first[i] = true
		seen[k] = i
		if need[i] {
			diffs[i] = st.diffFrom(events, i, first, last)
		}
	}
	return diffs
}

// diffFrom encodes the net change that events[from:] make: a member whose
// first event is a join was absent before them, one whose first is a leave
// was present; its last event says whether it is present now. It returns
// nil if nothing changed.
//
// It walks the events twice, once to size the frame and once to write it,
// so that the frame is all it allocates: a window's suffix diffs add up to
// the square of its joiners (each joiner of the window gets the joins
// after its own), and building each through lists and a payload copied
// into its envelope was five times the frames' own bytes.
func (st *roomState) diffFrom(events []presenceEvent, from int, first []bool, last []int) []byte {
	size, changed := 0, false
	for j := from; j < len(events); j++ {
		if !first[j] {
			continue
		}
		f, l := events[j], events[last[j]]
		switch netChange(f, l) {
		case memberJoined, memberLeft:
			size += len(l.entry) + 1
		case memberReplaced:
			size += len(f.entry) + len(l.entry) + 2
		default:
			continue
		}
		changed = true
	}
	if !changed {
		return nil
	}
	p := make([]byte, 0, len(diffHead)+2*len(st.name)+len(diffMid)+size+len(diffTail)+8)
	p = wire.EnvelopeStart(p, "presence.diff")
	p = append(p, `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"joins":[`...)
	p = appendChanges(p, events, from, first, last, true)
	p = append(p, `],"leaves":[`...)
	p = appendChanges(p, events, from, first, last, false)
	p = append(p, "]}"...)
	return wire.EnvelopeEnd(p, nil)
}

// The fixed parts of a presence.diff, for sizing it.
const (
	diffHead = `{"type":"presence.diff","payload":{"room":`
	diffMid  = `,"joins":[],"leaves":[`
	diffTail = `]}}`
)

// appendChanges appends, comma-separated, the joins (or the leaves) of
// events[from:] as diffFrom classifies them, in event order.
func appendChanges(p []byte, events []presenceEvent, from int, first []bool, last []int, joins bool) []byte {
	n := 0
	add := func(entry []byte) {
		if n > 0 {
			p = append(p, ',')
		}
		p = append(p, entry...)
		n++
	}
	for j := from; j < len(events); j++ {
		if !first[j] {
			continue
		}
		f, l := events[j], events[last[j]]
		switch c := netChange(f, l); {
		case joins && (c == memberJoined || c == memberReplaced):
			add(l.entry)
		case !joins && c == memberLeft:
			add(l.entry)
		case !joins && c == memberReplaced:
			add(f.entry) // left with its old meta, back with the new
		}
	}
	return p
}

// change is what a member's first and last events in a span make of it.
type change uint8

const (
	memberSame     change = iota // present before and after with the same entry, or absent both times
	memberJoined                 // absent before, present after
	memberLeft                   // present before, absent after
	memberReplaced               // present both times, with other meta: its entry is replaced
)

// netChange classifies a member's span of events from its first, f, and
// its last, l: a first join means it was absent before the span.
func netChange(f, l presenceEvent) change {
	was, is := !f.join, l.join
	switch {
	case !was && is:
		return memberJoined
	case was && !is:
		return memberLeft
	case was && is && !bytes.Equal(f.entry, l.entry):
		return memberReplaced
	}
	return memberSame
}
