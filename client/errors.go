package client

import (
	"errors"
	"fmt"
)

// Error is an error envelope from the server, {"type":"error","payload":
// {"code","message"}}: the answer to a request the server refused. Use
// errors.As to get it from a Request, Join, Publish, Leave or History error.
type Error struct {
	// Code is the machine-readable reason: "unknown_type",
	// "invalid_payload", "handler_error", "not_member", "forbidden", or an
	// application's own.
	Code string `json:"code"`
	// Message is the human-readable explanation.
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "troupe: " + e.Code
	}
	return fmt.Sprintf("troupe: %s: %s", e.Code, e.Message)
}

var (
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client: closed")
	// ErrDisconnected: the connection ended after the request was sent, so
	// its answer is lost (the server may or may not have carried it out), or
	// an operation that needs a connection found none.
	ErrDisconnected = errors.New("client: disconnected")
	// ErrQueueFull: Options.MaxQueued messages already wait for a
	// connection.
	ErrQueueFull = errors.New("client: queue full while disconnected")
	// ErrOutboxFull: Options.MaxOutbox publishes already wait for the
	// server's acknowledgement.
	ErrOutboxFull = errors.New("client: outbox full: too many publishes not yet acknowledged")
	// ErrLeft: Leave was called while a Join waited.
	ErrLeft = errors.New("client: left the room")
	// ErrPongTimeout is the Status.Err of a connection the client dropped
	// because a heartbeat went unanswered.
	ErrPongTimeout = errors.New("client: no pong within the timeout")
)
