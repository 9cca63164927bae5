package troupe

import (
	"encoding/json"
	"fmt"

	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/typed"
)

// HandleRoom registers fn for envelopes of type typ that are addressed to
// a room: the envelope's "room" field names it (or, when the envelope has
// none, the payload's "room"). The payload is decoded into a T on the
// sender's side (invalid_payload if it does not decode, and the room never
// sees it); then fn runs inside that room's actor, one message at a time
// and in the room's order with its joins, leaves, timers and publishes,
// with the room's logic h (from Config.NewRoomHandler) as its first
// argument, so a method expression registers a method:
//
//	troupe.HandleRoom(srv, "bid", (*auction).bid)
//	func (a *auction) bid(r *troupe.Room, from *troupe.Session, b Bid) (Result, error)
//
// What fn returns answers the sender's request id, as HandleRequest does:
// {"type":"reply","id":…,"payload":<R>} (nothing if the envelope had no
// id), or an error envelope (the code of an *Error, else
// "handler_error"). If fn panics, the sender gets "internal" at once, the
// room restarts as any room whose logic panics (see Config.MaxRoomRestarts)
// and OnError is told. A sender that is not a member of the room gets
// "not_member"; a room whose logic is not an H gets "unknown_type". Under a
// Backplane, fn runs on the sender's node, with that node's logic of the
// room.
func HandleRoom[H RoomHandler, T, R any](srv *Server, typ string, fn func(h H, r *Room, from *Session, msg T) (R, error)) {
	srv.router.HandleEnvelope(typ, func(c *Context, env *typed.Envelope) error {
		room, err := envelopeRoom(env)
		if err != nil {
			return err
		}
		var msg T
		if len(env.Payload) > 0 && string(env.Payload) != "null" {
			if err := json.Unmarshal(env.Payload, &msg); err != nil {
				return typed.NewError(typed.CodeInvalidPayload, fmt.Sprintf("payload of %q: %v", typ, err))
			}
		}
		from := c.s
		err = srv.rooms.Call(room, from, typ, env.ID, func(r *hub.Room, logic hub.Handler) (any, error) {
			h, ok := logic.(H)
			if !ok {
				return nil, typed.NewError(typed.CodeUnknownType, fmt.Sprintf("room %s does not take %q", room, typ))
			}
			return fn(h, r, from, msg)
		})
		if err != nil {
			return roomError(err)
		}
		c.replied = true // the room answers
		return nil
	})
}

// envelopeRoom is the room an envelope for a room handler is addressed to.
func envelopeRoom(env *typed.Envelope) (string, error) {
	room := env.Room
	if room == "" {
		var p struct {
			Room string `json:"room"`
		}
		_ = json.Unmarshal(env.Payload, &p)
		room = p.Room
	}
	return room, checkRoom(room)
}
