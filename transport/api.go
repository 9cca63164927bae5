package transport

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Conn is one client connection as a transport carries it: what a session
// reads from and writes to. The WebSocket transport implements it, and so
// does the in-memory connection of package troupetest; another transport
// (HTTP streaming, a custom protocol) implements it and hands each
// connection to troupe.Server.ServeConn, and sessions, rooms and handlers
// work unchanged.
//
// The session calls Read from one goroutine, and Write and Close from one
// goroutine at a time (never two writes at once, never a write after
// Close). CloseNow may be called at any time, from any goroutine.
type Conn interface {
	// Read returns the client's next message, blocking until one arrives.
	// Once the connection has ended it returns an error, a *CloseError
	// carrying the peer's close code where the transport has one (else
	// the session reports 1006, CloseAbnormal). ctx ends when the session
	// no longer needs to read.
	Read(ctx context.Context) (Message, error)
	// Write sends msgs in order, and must have sent them or failed by
	// deadline. It is one batch: a transport may send the messages
	// together (one system call, one frame of newline-separated text
	// messages, one flush). Like io.Writer's p, msgs is the caller's again
	// once Write returns: keep the messages' Data if needed, not the
	// slice, which the session reuses for its next batch.
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

// CloseError is how a connection ended, as Conn.Read reports it: the code
// and reason the peer closed with.
type CloseError struct {
	Code   int
	Reason string
}

// Error returns "connection closed: <code> <reason>".
func (e *CloseError) Error() string {
	return "transport: connection closed: " + strconv.Itoa(e.Code) + " " + e.Reason
}

// Info describes a connection to the server that will serve it.
type Info struct {
	// Header and RemoteAddr are those of the request that opened the
	// connection (Session.Header, Session.RemoteAddr; the session keeps
	// the header without Connection, Upgrade and Sec-WebSocket-Key,
	// -Version and -Extensions).
	Header     http.Header
	RemoteAddr string
	// Subprotocol is what the client and server agreed on, if anything
	// (Session.Subprotocol).
	Subprotocol string
	// Transport names the transport in metrics ("websocket", "sse", ...).
	Transport string
	// Identity is who the transport found the client to be
	// (Session.Identity); Config.Authorize does not run for ServeConn.
	Identity string
}
