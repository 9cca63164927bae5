package hub

import "errors"

var (
	// ErrNoRoom is returned by Deliver for a room that has no members.
	ErrNoRoom = errors.New("troupe: no such room")
	// ErrNotMember is returned by Leave for a session that is not a member.
	ErrNotMember = errors.New("troupe: not a member of the room")
	// ErrRoomFull is returned by Join when the room has MaxMembers members.
	ErrRoomFull = errors.New("troupe: room full")
	// ErrTooManyRooms is returned by Join when the session is already in
	// MaxRoomsPerSession rooms.
	ErrTooManyRooms = errors.New("troupe: too many rooms")
	// ErrNoProtocol is returned by Room.Publish without Config.Protocol:
	// there is no numbered stream to publish into.
	ErrNoProtocol = errors.New("troupe: room protocol is off")
	// ErrRoomStopped is matched by the error OnError is told when a room
	// whose logic kept failing was stopped (see Config.MaxRestarts).
	ErrRoomStopped = errors.New("troupe: room stopped: its logic kept failing")
	// ErrStopped is returned by every call after Shutdown.
	ErrStopped = errors.New("troupe: server closed")
)
