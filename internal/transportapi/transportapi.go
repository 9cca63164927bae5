// Package transportapi defines the connection interface of package transport
// (transport.Conn, transport.Message are aliases of these types). It exists
// so that the session, which writes to a transport.Conn, need not import
// package transport, which imports the session.
package transportapi

import (
	"context"
	"time"
)

// Conn is one client connection as a transport carries it; see
// transport.Conn.
//
// The session calls Read from one goroutine, and Write and Close from one
// goroutine at a time (never two writes at once, never a write after
// Close). CloseNow may be called at any time, from any goroutine.
type Conn interface {
	// Read returns the client's next message, blocking until one arrives.
	// Once the connection has ended it returns an error, a
	// *transport.CloseError carrying the peer's close code where the
	// transport has one (else the session reports 1006, CloseAbnormal).
	// ctx ends when the session no longer needs to read.
	Read(ctx context.Context) (Message, error)
	// Write sends msgs in order, and must have sent them or failed by
	// deadline. It is one batch: a transport may send the messages
	// together (one system call, one frame of newline-separated text
	// messages, one flush).
	Write(msgs []Message, deadline time.Time) error
	// Close ends the connection with a close code (1000-4999) and reason,
	// with the transport's closing handshake if it has one, bounded by its
	// own timeouts.
	Close(code int, reason string) error
	// CloseNow drops the connection without a handshake; a blocked Read or
	// Write must return.
	CloseNow() error
}

// Message is one message of a connection, in either direction. Data is
// never modified once handed over: a broadcast shares the same bytes with
// every member.
type Message struct {
	Data   []byte
	Binary bool
}
