package hub

import "github.com/troupehq/troupe/internal/session"

// Handler is application logic that runs inside a room actor, one call at a
// time, never concurrently with another call for the same room. It may keep
// state in its own fields without locks. If a method panics, the room is
// restarted with a fresh Handler (from Config.NewHandler) and the same
// members; the message being handled is dropped and OnError is told (past
// Config.MaxRestarts the room stops instead). A Handler may also have the
// optional methods of logic.go: OnStart, OnStop, OnPublish, Snapshot and
// Restore.
type Handler interface {
	// OnJoin runs after s became a member (the join is already acknowledged).
	OnJoin(r *Room, s *session.Session)
	// OnLeave runs after s stopped being a member, whether it left or closed.
	OnLeave(r *Room, s *session.Session)
	// OnMessage receives what Manager.Deliver sent to the room, and the
	// messages of the room's timers (Room.After, Room.Every) with from nil.
	OnMessage(r *Room, from *session.Session, msg any)
}

// NopHandler implements Handler with methods that do nothing; embed it to
// write only the methods you need.
type NopHandler struct{}

// OnJoin does nothing.
func (NopHandler) OnJoin(*Room, *session.Session) {}

// OnLeave does nothing.
func (NopHandler) OnLeave(*Room, *session.Session) {}

// OnMessage does nothing.
func (NopHandler) OnMessage(*Room, *session.Session, any) {}
