package hub

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/typed"
)

// roomRef is the supervisor's record of a room actor.
type roomRef struct {
	pid       *actor.PID
	st        *roomState
	forwarded uint64 // joins sent to the room
	stopping  bool   // empty and told to stop; waiting for its Terminated
	pending   []*joinReq
}

// dormant is the state of a stopped room kept for resume under the room
// protocol: a member that comes back within the retention finds the same
// sequence and history.
type dormant struct {
	st    *roomState
	until time.Time
}

// supervisor owns the room actors: it spawns a room on its first join,
// stops it once it is empty with no join on the way, and restarts it when
// its logic panics. It implements actor.SupervisorStrategy itself, so that it
// knows which room failed.
type supervisor struct {
	m       *Manager
	rooms   map[string]*roomRef
	byPID   map[string]*roomRef // by PID.Id, for failures and Terminated
	dormant map[string]dormant
	swept   time.Time
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
		ref.forwarded++
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
		if ref != nil && !ref.stopping && ref.forwarded == msg.joins {
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
			sv.dormant[ref.st.name] = dormant{st: ref.st, until: time.Now().Add(sv.m.cfg.Retention)}
		}
		if len(ref.pending) > 0 {
			next := sv.spawn(ctx, ref.st.name)
			for _, j := range ref.pending {
				next.forwarded++
				ctx.Send(next.pid, j)
			}
		}
		sv.sweep()
	case *actor.Stopped:
		for name := range sv.rooms {
			sv.m.live.Delete(name)
		}
		close(sv.m.stopped)
	}
}

// sweep forgets dormant rooms whose retention has passed. It runs as rooms
// stop, at most every few seconds, so it needs no timer of its own.
func (sv *supervisor) sweep() {
	now := time.Now()
	if now.Sub(sv.swept) < 5*time.Second {
		return
	}
	sv.swept = now
	for name, d := range sv.dormant {
		if now.After(d.until) {
			delete(sv.dormant, name)
		}
	}
}

func (sv *supervisor) spawn(ctx actor.Context, name string) *roomRef {
	m := sv.m
	if d, ok := sv.dormant[name]; ok {
		delete(sv.dormant, name)
		if time.Now().Before(d.until) {
			return sv.start(ctx, d.st)
		}
	}
	st := &roomState{name: name, members: make(map[string]*session.Session)}
	if m.cfg.Protocol {
		st.proto = true
		st.meta = make(map[string]json.RawMessage)
		st.hist = m.newHistory(name)
		if st.bp = m.cfg.Backplane; st.bp == nil {
			st.epoch = newEpoch()
		} // else the backplane's epoch, once the room follows its log
	}
	return sv.start(ctx, st)
}

// start spawns an actor for st, a new room or a dormant one coming back.
func (sv *supervisor) start(ctx actor.Context, st *roomState) *roomRef {
	m, name := sv.m, st.name
	props := actor.PropsFromProducer(func() actor.Actor {
		var h Handler
		if m.cfg.NewHandler != nil {
			h = m.cfg.NewHandler(name)
		}
		return &roomActor{st: st, m: m, h: h}
	})
	ref := &roomRef{pid: ctx.Spawn(props), st: st, forwarded: st.joins}
	sv.rooms[name] = ref
	sv.byPID[ref.pid.Id] = ref
	m.live.Store(name, ref)
	return ref
}

// HandleFailure restarts the failed room, whatever the failure: its members
// and queued messages are kept; only the message that failed is lost.
func (sv *supervisor) HandleFailure(_ *actor.ActorSystem, s actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason any, _ any) {
	err, ok := reason.(*typed.PanicError)
	if !ok {
		name := "?"
		if ref := sv.byPID[child.Id]; ref != nil {
			name = ref.st.name
		}
		err = &typed.PanicError{Room: name, Value: reason}
	}
	s.RestartChildren(child)
	if sv.m.cfg.OnError != nil {
		sv.m.sys.SafeCall(func() { sv.m.cfg.OnError(err.Room, err) })
	}
}

// newEpoch names a new incarnation of a room's numbering.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
