package session

import "errors"

var (
	// ErrClosed is returned by sends on a session that is closing or closed.
	ErrClosed = errors.New("troupe: session closed")
	// ErrSlowConsumer is returned by the send that found the session's
	// outbound queue full; the session is then closed with
	// CloseTryAgainLater. It is also what OnError receives for that session.
	ErrSlowConsumer = errors.New("troupe: outbound queue full (slow consumer)")
	// ErrNoEncoder is returned by Session.Send when the session was created
	// without an envelope encoder.
	ErrNoEncoder = errors.New("troupe: session has no envelope encoder")
)
