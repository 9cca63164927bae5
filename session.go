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
// at a time: OnJoin, OnLeave, OnMessage (what Server.DeliverToRoom sends,
// and the messages of the room's timers, with from nil), and the HandleRoom
// handlers of its members' requests. It may keep state in its own fields
// without locks. If a method panics, the room is restarted with a fresh
// RoomHandler (from Config.NewRoomHandler) and the same members; OnError
// gets a *PanicError; past Config.MaxRoomRestarts the room is stopped.
//
// A RoomHandler may also have any of these methods, which are called when
// present:
//
//	OnStart(r *Room)  // each incarnation's start: first join, wake, restart
//	OnStop(r *Room)   // the room stops: last member gone, or shutdown
//	OnPublish(r *Room, from *Session, body json.RawMessage) (json.RawMessage, error)
//	Snapshot() any    // after every call that returned: the state to keep
//	Restore(state any) // before OnStart, with the last Snapshot
//
// OnPublish sees every room.publish of a member before it is numbered: it
// returns the body to publish (the same one to accept it as it is, another
// to transform it) or an error, which refuses it and is the sender's
// answer. Snapshot and Restore carry the logic's state across what the
// room's sequence and history survive: a restart after a panic (the state
// of the last call that returned, so the failed message's half-done changes
// are not kept) and, under the room protocol, a dormant period within
// HistoryRetention. Return a value Restore can own (a copy, or data never
// changed in place): it is kept while the room runs and while it is dormant.
// The README's "Room logic" says what survives what.
type RoomHandler = hub.Handler

// Room is what room logic receives: Name, Members, Len, Has, MemberID;
// Broadcast and BroadcastExcept (typed envelopes, in the room's order);
// Publish into the room's numbered stream; After and Every, timers of
// this incarnation of the room. It is valid only during the call.
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
	// ErrRoomStopped: what OnError is told (with the room's last
	// *PanicError inside) when a room whose logic kept failing was stopped
	// (see Config.MaxRoomRestarts).
	ErrRoomStopped = hub.ErrRoomStopped
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
