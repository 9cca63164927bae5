package hub

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/troupehq/troupe/internal/wire"
	"github.com/troupehq/troupe/rooms"
)

// Read-your-writes under a Backplane. A node answers room.history and a
// resume from its copy of the room's log, which trails the log: the
// acknowledgement of a publish (room.published) comes from the log, and
// the node's copy receives the message a moment later through its feed.
// So that a session never reads less than it was told was written, the
// room remembers, for each of its members on this node, the highest seq
// acknowledged to it, and a read that needs more than the copy holds waits
// for the feed (readWait at most), then follows the log again (which
// reaches its end); only if that fails too is it answered "unavailable".
// A join whose since (carried over from another node) is beyond the copy
// catches up the same way before room.joined, and is refused as
// unavailable rather than answered with an older seq.

// readWait bounds how long a read waits for the feed before the room
// follows the log again to catch up.
const readWait = 2 * time.Second

// parkedRead is a room.history waiting for the room's copy to reach need.
type parkedRead struct {
	r        *historyReq
	need     uint64
	deadline time.Time
}

// readDue is the timer of the oldest parked read.
type readDue struct{}

// noteAcked records that seq was acknowledged to the member with session
// ID sid. It runs on the publisher goroutine, before the acknowledgement
// is sent.
func (st *roomState) noteAcked(sid string, seq uint64) {
	p := &st.pub
	p.mu.Lock()
	if p.acked == nil {
		p.acked = make(map[string]uint64)
	}
	if seq > p.acked[sid] {
		p.acked[sid] = seq
	}
	p.mu.Unlock()
}

// ackedSeq is the highest seq acknowledged to the member sid on this node.
func (st *roomState) ackedSeq(sid string) uint64 {
	p := &st.pub
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked[sid]
}

// forgetAcked drops what noteAcked kept of a member that left, and of any
// other session that is no longer a member: an acknowledgement can land
// after its publisher left (noteAcked runs on the publisher goroutine), and
// its entry would otherwise stay as long as the room. So the map never
// holds more than the members plus the acknowledgements that raced a
// leave since the last one. It runs on the room actor, which owns members.
func (st *roomState) forgetAcked(sid string) {
	p := &st.pub
	p.mu.Lock()
	delete(p.acked, sid)
	for id := range p.acked {
		if _, ok := st.members[id]; !ok {
			delete(p.acked, id)
		}
	}
	p.mu.Unlock()
}

// readHistory answers room.history at once if the room's copy holds
// everything acknowledged to the asker, else parks it until it does.
func (a *roomActor) readHistory(ctx actor.Context, r *historyReq) {
	st := a.st
	if st.bp == nil || st.feed == nil {
		st.history(r)
		return
	}
	need := st.ackedSeq(r.s.ID())
	if need <= st.seq {
		st.history(r)
		return
	}
	st.parked = append(st.parked, parkedRead{r: r, need: need, deadline: time.Now().Add(readWait)})
	if st.readTimer == nil {
		self, root := ctx.Self(), a.m.root
		st.readTimer = time.AfterFunc(readWait, func() { root.Send(self, readDue{}) })
	}
}

// answerParked answers the parked reads the room's copy now satisfies.
func (st *roomState) answerParked() {
	if len(st.parked) == 0 {
		return
	}
	keep := st.parked[:0]
	for _, p := range st.parked {
		if p.need <= st.seq {
			st.history(p.r)
		} else {
			keep = append(keep, p)
		}
	}
	clear(st.parked[len(keep):])
	st.parked = keep
	if len(keep) == 0 && st.readTimer != nil {
		st.readTimer.Stop()
		st.readTimer = nil
	}
}

// readsDue handles the reads that waited readWait for the feed: the room
// follows the log again, which brings its copy to the log's end, and
// answers them; what it still cannot answer is refused as unavailable.
func (a *roomActor) readsDue(ctx actor.Context) {
	st := a.st
	st.readTimer = nil
	now := time.Now()
	late := false
	for _, p := range st.parked {
		if !now.Before(p.deadline) && p.need > st.seq {
			late = true
		}
	}
	if late && st.feed != nil {
		if err := a.refollow(ctx); err != nil {
			a.m.logError(st.name, err)
		}
	}
	st.answerParked()
	keep := st.parked[:0]
	for _, p := range st.parked {
		if now.Before(p.deadline) {
			keep = append(keep, p)
			continue
		}
		_ = p.r.s.SendText(wire.Error(p.r.id, "unavailable",
			fmt.Sprintf("room %s: this node has not reached seq %d yet; try again", st.name, p.need)))
	}
	clear(st.parked[len(keep):])
	st.parked = keep
	if len(keep) > 0 {
		self, root := ctx.Self(), a.m.root
		st.readTimer = time.AfterFunc(time.Until(keep[0].deadline), func() { root.Send(self, readDue{}) })
	}
}

// dropParked refuses the parked reads when the room stops.
func (st *roomState) dropParked() {
	if st.readTimer != nil {
		st.readTimer.Stop()
		st.readTimer = nil
	}
	for _, p := range st.parked {
		_ = p.r.s.SendText(wire.Error(p.r.id, "unavailable", "room "+st.name+" is stopping on this node; try again"))
	}
	st.parked = nil
}

// errBehind is a join refused because the room's copy could not reach the
// seq the joiner already had.
func errBehind(room string, need uint64) error {
	return fmt.Errorf("%w: room %s: this node has not reached seq %d yet", rooms.ErrUnavailable, room, need)
}

// Presence at join. A member's join is announced to the other nodes before
// its room.joined is sent (not a presence window later), and a join asks
// the other nodes for their lists (rooms.PresenceSyncer, presenceSyncWait
// at most) before it answers: room.joined then lists every member whose
// room.joined went out before this join arrived. When the backplane cannot
// sync, or not every node answered in time, room.joined says
// "presence":"partial".

// presenceSyncWait bounds how long a join waits for the other nodes' lists.
const presenceSyncWait = 500 * time.Millisecond

// presenceSyncPause is how long after a sync that did not complete the
// room answers joins as partial without asking again. The sync runs in the
// room's actor, so without it every join behind a node that died (and is
// still counted live for a few seconds) would wait presenceSyncWait in
// turn: a join storm would hold the room for as many half-seconds.
const presenceSyncPause = 3 * time.Second

// syncPresence brings the other nodes' lists up to date for a joiner and
// says whether they are complete.
func (a *roomActor) syncPresence(ctx actor.Context) bool {
	st := a.st
	ps, ok := st.bp.(rooms.PresenceSyncer)
	if !ok {
		return false
	}
	if !st.syncFailed.IsZero() && time.Since(st.syncFailed) < presenceSyncPause {
		return false
	}
	c, cancel := context.WithTimeout(context.Background(), presenceSyncWait)
	defer cancel()
	lists, complete, err := ps.SyncPresence(c, st.name)
	if err != nil || !complete {
		st.syncFailed = time.Now()
	} else {
		st.syncFailed = time.Time{}
	}
	if err != nil {
		return false
	}
	for node, members := range lists {
		a.fromPresence(ctx, &remotePresence{node: node, members: members})
	}
	if complete {
		for node := range st.remote {
			if _, ok := lists[node]; !ok {
				a.fromPresence(ctx, &remotePresence{node: node})
			}
		}
	}
	return complete
}
