package session

import "errors"

var (
	// ErrClosed is returned by sends on a session that is closing or closed.
	ErrClosed = errors.New("troupe: session closed")
	// ErrSlowConsumer is returned by the send that found the session's
	// outbound queue full; the session is then closed with
	// CloseTryAgainLater. It is also what OnError receives for that session.
	ErrSlowConsumer = errors.New("troupe: outbound queue full (slow consumer)")
	// ErrResynced is returned by the send of room traffic that found the
	// outbound queue full under Options.Resync: the frame is dropped, with
	// the room traffic queued before it, and the client is sent a
	// room.resync to catch up from the room's history.
	ErrResynced = errors.New("troupe: outbound queue full: room traffic dropped, client resynced")
	// ErrNoEncoder is returned by Session.Send when the session was created
	// without an envelope encoder.
	ErrNoEncoder = errors.New("troupe: session has no envelope encoder")
)
