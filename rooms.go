package troupe

import (
	"context"
	"errors"

	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/rooms"
	"github.com/troupehq/troupe/typed"
)

// Join makes s a member of room, creating the room on its first join. It
// returns once the join is in effect: anything broadcast to the room after
// Join returns reaches s. A session that closes leaves its rooms by itself.
func (srv *Server) Join(ctx context.Context, room string, s *Session) error {
	if err := srv.authorizeJoin(s, room); err != nil {
		return err
	}
	return roomError(srv.rooms.Join(ctx, room, s))
}

// roomError gives the rooms package's errors the code a client sees, while
// errors.Is still finds them.
func roomError(err error) error {
	var code string
	switch {
	case err == nil:
		return nil
	case errors.Is(err, hub.ErrNotMember):
		code = "not_member"
	case errors.Is(err, hub.ErrRoomFull):
		code = "room_full"
	case errors.Is(err, hub.ErrTooManyRooms):
		code = "too_many_rooms"
	case errors.Is(err, rooms.ErrUnavailable):
		code = "unavailable"
	default:
		return err
	}
	return &typed.Error{Code: code, Message: err.Error(), Err: err}
}

// authorizeJoin asks Config.AuthorizeJoin; a plain error becomes a
// "forbidden" *Error for the client.
func (srv *Server) authorizeJoin(s *Session, room string) error {
	if srv.cfg.AuthorizeJoin == nil {
		return nil
	}
	return asForbidden(srv.cfg.AuthorizeJoin(s, room))
}

// asForbidden gives a refusal from application code the client code
// "forbidden", unless it is a *typed.Error with a code of its own.
func asForbidden(err error) error {
	if err == nil {
		return nil
	}
	var te *typed.Error
	if errors.As(err, &te) {
		return err
	}
	return &typed.Error{Code: "forbidden", Message: err.Error(), Err: err}
}

// Leave removes s from room (ErrNotMember if it was not in it). A room whose
// last member leaves is stopped.
func (srv *Server) Leave(ctx context.Context, room string, s *Session) error {
	return roomError(srv.rooms.Leave(ctx, room, s))
}

// LeaveAll removes s from every room it is in.
func (srv *Server) LeaveAll(ctx context.Context, s *Session) error {
	return srv.rooms.LeaveAll(ctx, s)
}

// Members returns the members of room in join order.
func (srv *Server) Members(ctx context.Context, room string) ([]*Session, error) {
	return srv.rooms.Members(ctx, room)
}

// RoomsOf returns the rooms s is in, sorted.
func (srv *Server) RoomsOf(s *Session) []string { return srv.rooms.RoomsOf(s) }

// Rooms returns the rooms that have members, sorted.
func (srv *Server) Rooms() []string { return srv.rooms.Rooms() }

// Broadcast encodes {"type": typ, "payload": payload} once and queues the
// same bytes on every member of room, in the room's order. It never waits on
// a member: one whose queue is full is closed with 1013.
func (srv *Server) Broadcast(room, typ string, payload any) error {
	return srv.rooms.Broadcast(room, typ, payload)
}

// BroadcastExcept is Broadcast to every member but except (typically the
// sender).
func (srv *Server) BroadcastExcept(room string, except *Session, typ string, payload any) error {
	return srv.rooms.BroadcastExcept(room, except, typ, payload)
}

// DeliverToRoom hands msg to the room's RoomHandler.OnMessage, inside the
// room actor, in order with the room's joins, leaves and broadcasts.
func (srv *Server) DeliverToRoom(room string, from *Session, msg any) error {
	return srv.rooms.Deliver(room, from, msg)
}
