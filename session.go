package troupe

import (
	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/rooms"
	"github.com/troupehq/troupe/typed"
)

// Session is one client connection, whatever carries it, backed by a
// session actor whose mailbox serialises everything written to it.
//
// Its methods are safe from any goroutine, handlers of the same session
// included: ID (a UUID), Send, SendText, SendBinary, Request (the server
// asks, the client answers), Close and CloseWith (after what is queued),
// IsOpen, Context (done once the session has closed), Identity and
// SetIdentity, Set and Get (per-session values), Header and RemoteAddr of
// the opening request, Subprotocol, CloseCode and EmitError. A send after
// close returns ErrClosed; no send ever blocks on the network.
type Session = session.Session

// RoomHandler is application logic that runs inside a room actor, one call
// at a time: OnJoin, OnLeave, and OnMessage for what Server.DeliverToRoom
// sends. It may keep state in its own fields without locks. If a method
// panics, the room is restarted with a fresh RoomHandler (from
// Config.NewRoomHandler) and the same members; OnError gets a *PanicError.
type RoomHandler = hub.Handler

// Room is what a RoomHandler's methods receive: Name, Members, Len,
// Broadcast and BroadcastExcept, all in the room's order.
type Room = hub.Room

// NopRoomHandler implements RoomHandler with methods that do nothing; embed
// it to write only the methods you need.
type NopRoomHandler = hub.NopHandler

// History stores what a room keeps for resume and room.history; set
// Config.NewHistory to replace the in-memory one (see package rooms).
type History = rooms.History

// Backplane carries rooms across server nodes (see package rooms, and the
// module github.com/troupehq/troupe/backplane/nats).
type Backplane = rooms.Backplane

// Error is an error with a code for the client; return one from a handler to
// choose what the error envelope says.
type Error = typed.Error

// NewError returns an *Error with the given code and message.
func NewError(code, message string) *Error { return typed.NewError(code, message) }

// ReplyError is what Session.Request returns when the client answered with
// an error envelope: its Code and Message.
type ReplyError = session.ReplyError

// PanicError is what OnError receives when a handler (Type set) or room
// logic (Room set) panicked; Value is what was passed to panic. The session
// or room lives on (a room is restarted).
type PanicError = typed.PanicError

// Errors returned by Troupe. Compare with errors.Is.
var (
	// ErrClosed: a send or join on a session that is closing or closed.
	ErrClosed = session.ErrClosed
	// ErrSlowConsumer: the session's outbound queue was full; it is being
	// closed with CloseTryAgainLater.
	ErrSlowConsumer = session.ErrSlowConsumer
	// ErrServerClosed: a rooms call (Join, Leave, Members, Broadcast, ...)
	// after Shutdown or Close.
	ErrServerClosed = hub.ErrStopped
	// ErrNoSession: SendTo named a session that is not open.
	ErrNoSession = errNoSession
	// ErrNotMember: Leave for a session that is not in the room.
	ErrNotMember = hub.ErrNotMember
	// ErrNoRoom: DeliverToRoom named a room with no members.
	ErrNoRoom = hub.ErrNoRoom
	// ErrRoomFull: a join beyond MaxRoomMembers (client code "room_full").
	ErrRoomFull = hub.ErrRoomFull
	// ErrTooManyRooms: a join beyond MaxRoomsPerSession (client code
	// "too_many_rooms").
	ErrTooManyRooms = hub.ErrTooManyRooms
	// ErrUnavailable: the backplane could not be reached (client code
	// "unavailable").
	ErrUnavailable = rooms.ErrUnavailable
)

// Close codes Troupe sends or reports (RFC 6455, section 7.4.1); the
// README's table says when each is used.
const (
	CloseNormal          = session.CloseNormal
	CloseGoingAway       = session.CloseGoingAway
	CloseAbnormal        = session.CloseAbnormal
	CloseInvalidData     = session.CloseInvalidData
	ClosePolicyViolation = session.ClosePolicyViolation
	CloseMessageTooBig   = session.CloseMessageTooBig
	CloseInternalError   = session.CloseInternalError
	CloseTryAgainLater   = session.CloseTryAgainLater
)
