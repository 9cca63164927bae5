package troupe

import (
	"context"
	"encoding/json"

	"github.com/troupehq/troupe/internal/router"
	"github.com/troupehq/troupe/typed"
)

// Context is what a typed handler receives with its message: the session it
// came from, the envelope's metadata, and shortcuts to reply and to rooms.
type Context struct {
	srv     *Server
	s       *Session
	env     *typed.Envelope
	replied bool // an answer to the request's id was sent (or will be)
}

// Session returns the session the message came from.
func (c *Context) Session() *Session { return c.s }

// Server returns the server.
func (c *Context) Server() *Server { return c.srv }

// Context returns the session's context, cancelled when it closes.
func (c *Context) Context() context.Context { return c.s.Context() }

// Type returns the envelope's type.
func (c *Context) Type() string { return c.env.Type }

// ID returns the envelope's "id" as raw JSON (nil if it had none).
func (c *Context) ID() json.RawMessage { return c.env.ID }

// Room returns the envelope's "room" field ("" if it had none).
func (c *Context) Room() string { return c.env.Room }

// Payload returns the envelope's payload as raw JSON.
func (c *Context) Payload() json.RawMessage { return c.env.Payload }

// Reply sends {"type": typ, "payload": payload, "id": <the request's id>} to
// the session the message came from.
func (c *Context) Reply(typ string, payload any) error {
	c.replied = true
	b, err := typed.EncodeWithID(typ, payload, c.env.ID)
	if err != nil {
		return err
	}
	return c.s.SendText(b)
}

// Join makes the session a member of room; see Server.Join.
func (c *Context) Join(room string) error { return c.srv.Join(c.Context(), room, c.s) }

// Leave removes the session from room; see Server.Leave.
func (c *Context) Leave(room string) error { return c.srv.Leave(c.Context(), room, c.s) }

// HandleRequest registers fn for envelopes of type typ and sends what fn
// returns as the answer: {"type":"reply","id":<the request's id>,"payload":<R>},
// or an error envelope with the id if fn returns an error. It is Handle for
// request/reply: a client's request() resolves with the payload.
func HandleRequest[T, R any](srv *Server, typ string, fn func(c *Context, msg T) (R, error)) {
	Handle(srv, typ, func(c *Context, msg T) error {
		r, err := fn(c, msg)
		if err != nil {
			return err
		}
		return c.Reply("reply", r)
	})
}

// Handle registers fn for envelopes of type typ. The payload is decoded into
// a T; if it does not decode, the client gets an error envelope with code
// "invalid_payload" and fn is not called. If fn returns an error, the client
// gets an error envelope carrying the request's id: the code and message of
// an *Error, or "handler_error" and the error's text. If fn panics, the
// client gets "internal", OnError is told, and the session lives on. A
// request that carries an id and that fn neither answered (Reply) nor failed
// gets an empty {"type":"reply","id":…}: every id is answered exactly once.
func Handle[T any](srv *Server, typ string, fn func(c *Context, msg T) error) {
	router.Handle(srv.router, typ, fn)
}
