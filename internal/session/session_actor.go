package session

import (
	"github.com/asynkron/protoactor-go/actor"
)

// sessionActor is the session's mailbox owner. It never touches the network:
// it moves accepted frames into the writer's queue and starts the writer when
// none is running, so a slow socket never stalls the mailbox.
type sessionActor struct{ s *Session }

func (a *sessionActor) Receive(ctx actor.Context) {
	s := a.s
	// A panic here would be a bug of ours; it must not reach protoactor's
	// supervisor, whose restart would build the actor again from the
	// shared Props (System.NewSession) without its session.
	defer func() {
		if r := recover(); r != nil {
			s.sys.logger.Error("troupe: panic in session actor", "session", s.id, "panic", r)
		}
	}()
	switch m := ctx.Message().(type) {
	case *Shared:
		s.mu.Lock()
		if s.discard {
			s.queued--
			s.queuedBytes -= len(m.frame.Data)
		} else {
			s.wq = append(s.wq, m.frame)
			s.startWriterLocked()
		}
		s.mu.Unlock()
	case kickWriter:
		s.mu.Lock()
		s.startWriterLocked()
		s.mu.Unlock()
	case *reportError:
		s.sys.SafeCall(func() { s.EmitError(m.err) })
	}
}

// startWriterLocked starts the writer unless one is running or the session
// is finished. The writer runs on the system's pool only while there is
// work, so an idle session holds no goroutine.
func (s *Session) startWriterLocked() {
	if s.writing || s.state == stateFinished || s.closeSent {
		return
	}
	if len(s.wq) == 0 && s.state != stateClosing {
		return
	}
	s.writing = true
	s.writers.Add(1)
	s.sys.pool.Go(s.writeLoop)
}
