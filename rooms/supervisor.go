package rooms

import (
	"github.com/asynkron/protoactor-go/actor"
	"github.com/troupehq/troupe/actors"
)

// roomRef is the supervisor's record of a live room.
type roomRef struct {
	pid       *actor.PID
	st        *roomState
	forwarded uint64 // joins sent to the room
}

// supervisor owns the room actors: it spawns a room on its first join,
// stops it once it is empty with no join on the way, and restarts it when
// its logic panics. It implements actor.SupervisorStrategy itself, so that it
// knows which room failed.
type supervisor struct {
	m     *Manager
	rooms map[string]*roomRef
	byPID map[string]*roomRef // by PID.Id, for failures
}

func (sv *supervisor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *joinReq:
		ref := sv.rooms[msg.room]
		if ref == nil {
			ref = sv.spawn(ctx, msg.room)
		}
		ref.forwarded++
		ctx.Send(ref.pid, msg)
	case *leaveReq:
		if ref := sv.rooms[msg.room]; ref != nil {
			ctx.Send(ref.pid, msg)
		} else {
			msg.reply <- ErrNotMember
		}
	case *membersReq:
		if ref := sv.rooms[msg.room]; ref != nil {
			ctx.Send(ref.pid, msg)
		} else {
			msg.reply <- nil
		}
	case *roomEmpty:
		ref := sv.rooms[msg.name]
		if ref != nil && ref.forwarded == msg.joins {
			delete(sv.rooms, msg.name)
			delete(sv.byPID, ref.pid.Id)
			sv.m.live.Delete(msg.name)
			ctx.Stop(ref.pid)
		}
	case *actor.Stopped:
		for name := range sv.rooms {
			sv.m.live.Delete(name)
		}
		close(sv.m.stopped)
	}
}

func (sv *supervisor) spawn(ctx actor.Context, name string) *roomRef {
	st := &roomState{name: name, members: make(map[string]*actors.Session)}
	m := sv.m
	props := actor.PropsFromProducer(func() actor.Actor {
		var h Handler
		if m.cfg.NewHandler != nil {
			h = m.cfg.NewHandler(name)
		}
		return &roomActor{st: st, m: m, h: h}
	})
	ref := &roomRef{pid: ctx.Spawn(props), st: st}
	sv.rooms[name] = ref
	sv.byPID[ref.pid.Id] = ref
	m.live.Store(name, ref.pid)
	return ref
}

// HandleFailure restarts the failed room, whatever the failure: its members
// and queued messages are kept; only the message that failed is lost.
func (sv *supervisor) HandleFailure(_ *actor.ActorSystem, s actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason any, _ any) {
	err, ok := reason.(*PanicError)
	if !ok {
		name := "?"
		if ref := sv.byPID[child.Id]; ref != nil {
			name = ref.st.name
		}
		err = &PanicError{Room: name, Value: reason}
	}
	s.RestartChildren(child)
	if sv.m.cfg.OnError != nil {
		sv.m.sys.SafeCall(func() { sv.m.cfg.OnError(err.Room, err) })
	}
}
