package troupe

import (
	"github.com/troupehq/troupe/actors"
	"github.com/troupehq/troupe/rooms"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/typed"
)

// Session is one WebSocket connection, backed by a session actor. See
// actors.Session for its methods: ID, Send, SendText, SendBinary, Close,
// CloseWith, ShutdownNow, IsOpen, EmitError, Context, Identity, Set, Get,
// Header and RemoteAddr.
type Session = actors.Session

// Settings are the connection-level settings (heartbeat, timeouts, limits,
// origins), embedded in Config. See transport.Config for every field and its
// default.
type Settings = transport.Config

// RoomHandler is application logic that runs inside a room actor. See
// rooms.Handler.
type RoomHandler = rooms.Handler

// Room is what a RoomHandler's methods receive. See rooms.Room.
type Room = rooms.Room

// NopRoomHandler implements RoomHandler with methods that do nothing; embed
// it to write only the methods you need.
type NopRoomHandler = rooms.NopHandler

// Error is an error with a code for the client; return one from a handler to
// choose what the error envelope says. See typed.Error.
type Error = typed.Error

// NewError returns an *Error with the given code and message.
func NewError(code, message string) *Error { return typed.NewError(code, message) }

// Errors returned by Troupe. Compare with errors.Is.
var (
	// ErrClosed: a send or join on a session that is closing or closed.
	ErrClosed = actors.ErrClosed
	// ErrSlowConsumer: the session's outbound queue was full; it is being
	// closed with CloseTryAgainLater.
	ErrSlowConsumer = actors.ErrSlowConsumer
	// ErrServerClosed: a rooms call (Join, Leave, Members, Broadcast, ...)
	// after Shutdown or Close.
	ErrServerClosed = rooms.ErrStopped
	// ErrNoSession: SendTo named a session that is not open.
	ErrNoSession = errNoSession
	// ErrNotMember: Leave for a session that is not in the room.
	ErrNotMember = rooms.ErrNotMember
	// ErrNoRoom: DeliverToRoom named a room with no members.
	ErrNoRoom = rooms.ErrNoRoom
	// ErrRoomFull: a join beyond MaxRoomMembers (client code "room_full").
	ErrRoomFull = rooms.ErrRoomFull
	// ErrTooManyRooms: a join beyond MaxRoomsPerSession (client code
	// "too_many_rooms").
	ErrTooManyRooms = rooms.ErrTooManyRooms
)

// Close codes Troupe sends or reports; see the README's table.
const (
	CloseNormal          = actors.CloseNormal
	CloseGoingAway       = actors.CloseGoingAway
	CloseAbnormal        = actors.CloseAbnormal
	CloseInvalidData     = actors.CloseInvalidData
	ClosePolicyViolation = actors.ClosePolicyViolation
	CloseMessageTooBig   = actors.CloseMessageTooBig
	CloseInternalError   = actors.CloseInternalError
	CloseTryAgainLater   = actors.CloseTryAgainLater
)
