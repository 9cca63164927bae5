package hub

import (
	"container/list"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/typed"
)

// roomRef is the supervisor's record of a room actor.
type roomRef struct {
	pid *actor.PID
	st  *roomState
	// sent counts the joins sent to the room, by the supervisor and
	// straight from Manager.JoinWith; closing is set while the supervisor
	// decides to stop it, and for good once it does: a join sent
	// straight counts itself in sent and then looks at closing, the
	// supervisor sets closing and then looks at sent again, so one of the
	// two sees the other (see the roomEmpty case).
	sent     atomic.Uint64
	closing  atomic.Bool
	stopping bool // empty and told to stop; waiting for its Terminated
	pending  []*joinReq
	failures []time.Time // of its logic, within Config.RestartWindow
}

// dormant is the state of a stopped room kept for resume under the room
// protocol: a member that comes back within the retention finds the same
// sequence and history.
type dormant struct {
	st    *roomState
	until time.Time
	bytes int64 // st.histBytes, which cannot change while the room is dormant
}

// supervisor owns the room actors: it spawns a room on its first join,
// stops it once it is empty with no join on the way, and restarts it when
// its logic panics. It implements actor.SupervisorStrategy itself, so that it
// knows which room failed.
type supervisor struct {
	m       *Manager
	rooms   map[string]*roomRef
	byPID   map[string]*roomRef      // by PID.Id, for failures and Terminated
	dormant map[string]*list.Element // of byAge, holding a *dormant
	byAge   *list.List               // dormant rooms, the oldest in front
	// dormantBytes is what the dormant rooms' histories hold.
	dormantBytes int64
	swept        time.Time
	sweepTimer   *time.Timer // pending sweepDue, while rooms are dormant
}

func (sv *supervisor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *joinReq:
		ref := sv.rooms[msg.room]
		if ref == nil {
			ref = sv.spawn(ctx, msg.room)
		}
		if ref.stopping {
			// The old actor still owns the room's state; the join goes
			// to its successor once the old one is gone.
			ref.pending = append(ref.pending, msg)
			return
		}
		ref.sent.Add(1)
		ctx.Send(ref.pid, msg)
	case *leaveReq:
		if ref := sv.rooms[msg.room]; ref != nil && !ref.stopping {
			ctx.Send(ref.pid, msg)
		} else {
			msg.reply <- ErrNotMember
		}
	case *membersReq:
		if ref := sv.rooms[msg.room]; ref != nil && !ref.stopping {
			ctx.Send(ref.pid, msg)
		} else {
			msg.reply <- nil
		}
	case *roomEmpty:
		ref := sv.rooms[msg.name]
		// A roomEmpty of an earlier incarnation (one sent on a leave,
		// then again on the restart that followed, say) counts another
		// room's joins: only the live actor's own is heard.
		if ref != nil && ref.pid.Id == msg.pid && !ref.stopping && ref.sent.Load() == msg.joins {
			ref.closing.Store(true)
			if ref.sent.Load() != msg.joins {
				// A join on its way straight to the room: the room
				// tells again if it is still empty after it.
				ref.closing.Store(false)
				return
			}
			ref.stopping = true
			sv.m.live.Delete(msg.name)
			ctx.Stop(ref.pid)
		}
	case *actor.Terminated:
		ref := sv.byPID[msg.Who.Id]
		if ref == nil {
			return
		}
		delete(sv.byPID, msg.Who.Id)
		delete(sv.rooms, ref.st.name)
		if ref.st.proto && sv.m.cfg.Retention > 0 && ref.st.bp == nil {
			// (Under a backplane the log keeps the room.)
			sv.keep(ref.st)
		} else {
			sv.forget(ref.st)
		}
		if len(ref.pending) > 0 {
			next := sv.spawn(ctx, ref.st.name)
			for _, j := range ref.pending {
				next.sent.Add(1)
				ctx.Send(next.pid, j)
			}
		}
		sv.sweep()
	case sweepDue:
		sv.sweepTimer = nil
		sv.swept = time.Time{}
		sv.sweep()
		sv.armSweep()
	case reclaim:
		sv.m.reclaiming.Store(false) // a room going over from now on asks again
		sv.reclaim(ctx)
	case *actor.Stopped:
		if sv.sweepTimer != nil {
			sv.sweepTimer.Stop()
		}
		for name := range sv.rooms {
			sv.m.live.Delete(name)
		}
		close(sv.m.stopped)
	}
}

// sweep forgets dormant rooms whose retention has passed. It runs as rooms
// stop, at most every few seconds, so it needs no timer of its own. The
// retention is the same for every room, so the expired ones are the
// oldest.
func (sv *supervisor) sweep() {
	now := time.Now()
	if now.Sub(sv.swept) < 5*time.Second {
		return
	}
	sv.swept = now
	for e := sv.byAge.Front(); e != nil && now.After(e.Value.(*dormant).until); e = sv.byAge.Front() {
		sv.drop(e)
	}
}

// keep makes the state of a room that stopped dormant, forgetting the
// oldest dormant room first if there are MaxDormant of them already.
func (sv *supervisor) keep(st *roomState) {
	if max := sv.m.cfg.MaxDormant; max > 0 {
		for sv.byAge.Len() >= max {
			sv.drop(sv.byAge.Front())
			sv.m.evictedLimit.Add(1)
		}
	}
	if e, ok := sv.dormant[st.name]; ok {
		sv.drop(e) // (not expected: a room runs or sleeps, never both)
	}
	d := &dormant{st: st, until: time.Now().Add(sv.m.cfg.Retention), bytes: st.histBytes.Load()}
	sv.dormant[st.name] = sv.byAge.PushBack(d)
	sv.dormantBytes += d.bytes
	sv.m.dormantN.Store(int64(sv.byAge.Len()))
	sv.armSweep()
}

// armSweep makes sure that the oldest dormant room is forgotten when its
// retention ends even if no room stops then: a server left idle after a
// burst of rooms gives their memory back.
func (sv *supervisor) armSweep() {
	if sv.sweepTimer != nil || sv.byAge.Len() == 0 {
		return
	}
	wait := time.Until(sv.byAge.Front().Value.(*dormant).until) + 100*time.Millisecond
	m := sv.m
	sv.sweepTimer = time.AfterFunc(max(wait, time.Second), func() { m.root.Send(m.sup, sweepDue{}) })
}

// wake takes a dormant room out of the dormant ones, to run again: its
// history stays counted.
func (sv *supervisor) wake(e *list.Element) *dormant {
	d := e.Value.(*dormant)
	sv.byAge.Remove(e)
	delete(sv.dormant, d.st.name)
	sv.dormantBytes -= d.bytes
	sv.m.dormantN.Store(int64(sv.byAge.Len()))
	return d
}

// drop forgets a dormant room.
func (sv *supervisor) drop(e *list.Element) {
	sv.forget(sv.wake(e).st)
}

// forget takes what the history of a room whose state is dropped holds off
// the history budget.
func (sv *supervisor) forget(st *roomState) {
	if n := st.histBytes.Swap(0); n != 0 {
		sv.m.histBytes.Add(-n)
	}
}

// reclaim brings the histories back under the history budget when they
// went over it. It frees down to 15/16 of the budget, so that it runs once
// per budget/16 of new messages rather than on every one: first it
// forgets dormant rooms, oldest first (their members left longest ago),
// and then, if that is not enough, it trims the longest live histories to
// one level, the smallest cut that frees enough, so that a room whose
// history is short loses nothing while a longer one is over the level. A
// trimmed room keeps its newest messages; a resume from before them is
// answered recovered: false.
func (sv *supervisor) reclaim(ctx actor.Context) {
	m := sv.m
	budget := int64(m.cfg.HistoryBudget)
	if budget <= 0 || m.histBytes.Load() <= budget {
		return
	}
	target := budget - budget/16
	for sv.dormantBytes > 0 && m.histBytes.Load() > target {
		sv.drop(sv.byAge.Front())
		m.evictedBudget.Add(1)
	}
	need := m.histBytes.Load() - target
	if need <= 0 {
		return
	}
	type sized struct {
		ref   *roomRef
		bytes int64
	}
	live := make([]sized, 0, len(sv.rooms))
	for _, ref := range sv.rooms {
		if n := ref.st.histBytes.Load(); n > 0 {
			live = append(live, sized{ref, n})
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i].bytes > live[j].bytes })
	// The k longest are cut to level: the first k such that cutting
	// them to the next one's length would free enough.
	var sum int64
	level := int64(0)
	for k := 1; k <= len(live); k++ {
		sum += live[k-1].bytes
		next := int64(0)
		if k < len(live) {
			next = live[k].bytes
		}
		if sum-int64(k)*next >= need {
			level = max((sum-need)/int64(k), 0)
			live = live[:k]
			break
		}
	}
	for _, r := range live {
		ctx.Send(r.ref.pid, &trimHistory{max: int(level)})
	}
}

func (sv *supervisor) spawn(ctx actor.Context, name string) *roomRef {
	m := sv.m
	if e, ok := sv.dormant[name]; ok {
		d := sv.wake(e)
		if time.Now().Before(d.until) {
			return sv.start(ctx, d.st)
		}
		sv.forget(d.st)
	}
	st := &roomState{name: name, members: make(map[string]*session.Session)}
	if m.cfg.Protocol {
		st.proto = true
		st.limit = m.cfg.PresenceLimit
		st.joinedMin = -1
		st.meta = make(map[string]json.RawMessage)
		st.setHistory(m, m.newHistory(name))
		if st.bp = m.cfg.Backplane; st.bp == nil {
			st.epoch = newEpoch()
		} // else the backplane's epoch, once the room follows its log
	}
	return sv.start(ctx, st)
}

// start spawns an actor for st, a new room or a dormant one coming back.
func (sv *supervisor) start(ctx actor.Context, st *roomState) *roomRef {
	m, name := sv.m, st.name
	st.gaveUp.Store(nil)
	st.calls.open() // the last incarnation answered what its mailbox held
	props := actor.PropsFromProducer(func() actor.Actor {
		var h Handler
		if m.cfg.NewHandler != nil {
			h = m.cfg.NewHandler(name)
		}
		return &roomActor{st: st, m: m, h: h}
	})
	ref := &roomRef{pid: ctx.Spawn(props), st: st}
	ref.sent.Store(st.joins)
	sv.rooms[name] = ref
	sv.byPID[ref.pid.Id] = ref
	m.live.Store(name, ref)
	return ref
}

// HandleFailure restarts the failed room, whatever the failure: its members
// and queued messages are kept; only the message that failed is lost. A
// room that fails more than Config.MaxRestarts times within
// Config.RestartWindow is stopped instead (see giveUp).
func (sv *supervisor) HandleFailure(_ *actor.ActorSystem, s actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason any, _ any) {
	ref := sv.byPID[child.Id]
	err, ok := reason.(*typed.PanicError)
	if !ok {
		name := "?"
		if ref != nil {
			name = ref.st.name
		}
		err = &typed.PanicError{Room: name, Value: reason}
	}
	var report error = err
	if ref != nil && sv.tooMany(ref) {
		report = sv.giveUp(ref, err)
	}
	// Restarted either way, never stopped here: protoactor drops what a
	// stopped actor's mailbox holds (joins, publishes, requests of members
	// waiting for an answer), and a restart keeps it.
	s.RestartChildren(child)
	if sv.m.cfg.OnError != nil {
		sv.m.sys.SafeCall(func() { sv.m.cfg.OnError(err.Room, report) })
	}
}

// tooMany records a failure of ref's logic and reports whether it is one
// more than Config.MaxRestarts within Config.RestartWindow.
func (sv *supervisor) tooMany(ref *roomRef) bool {
	max, window := sv.m.cfg.MaxRestarts, sv.m.cfg.RestartWindow
	if max <= 0 {
		return false
	}
	now := time.Now()
	kept := ref.failures[:0]
	for _, t := range ref.failures {
		if now.Sub(t) < window {
			kept = append(kept, t)
		}
	}
	ref.failures = append(kept, now)
	return len(ref.failures) > max
}

// giveUp drops a room's failing logic: the incarnation that starts next
// (see roomActor.Receive, Started) removes every member, each told with
// room.left and the reason, and runs fresh logic without the state the
// failing one kept; a room left empty then stops as any room does. The
// messages waiting in its mailbox are handled by that incarnation: the
// evicted members' requests are answered not_member, new joins join the
// fresh room.
func (sv *supervisor) giveUp(ref *roomRef, last *typed.PanicError) error {
	err := &StoppedError{Room: ref.st.name, Failures: len(ref.failures), Within: sv.m.cfg.RestartWindow, Last: last}
	reason := fmt.Sprintf("room logic failed %d times within %s", err.Failures, err.Within)
	ref.st.gaveUp.Store(&reason)
	ref.failures = nil
	return err
}

// StoppedError is what OnError is told when a room was stopped because
// its logic failed more than Config.MaxRestarts times within
// Config.RestartWindow. It matches ErrRoomStopped and, with errors.As, the
// last *typed.PanicError.
type StoppedError struct {
	Room     string
	Failures int
	Within   time.Duration
	Last     *typed.PanicError
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("troupe: room %s stopped: its logic failed %d times within %s; last: %v", e.Room, e.Failures, e.Within, e.Last)
}

// Unwrap gives ErrRoomStopped and the last panic.
func (e *StoppedError) Unwrap() []error { return []error{ErrRoomStopped, e.Last} }

// newEpoch names a new incarnation of a room's numbering.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
