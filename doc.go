// Package troupe is a realtime messaging framework for WebSocket servers,
// built on the actor model.
//
// Every WebSocket connection becomes a session actor (protoactor-go) whose
// mailbox serialises its writes, its close and its shutdown: one writer per
// connection, frames in the order they were sent, never two writes at once,
// and OnClose exactly once. Rooms are actors under a supervisor: join, leave
// and broadcast pass through the room's mailbox, so every member sees one
// order, and room logic that panics is restarted without losing the room's
// members. Messages are JSON envelopes {"type": ..., "payload": ...}
// dispatched to typed handlers registered with Handle.
//
// A Server is an http.Handler:
//
//	srv, err := troupe.New(troupe.Config{})
//	troupe.Handle(srv, "chat.say", func(c *troupe.Context, m Say) error {
//		return c.Server().Broadcast(m.Room, "chat.said", m)
//	})
//	http.Handle("/ws", srv)
//
// See the README for the guarantees and the close codes.
package troupe
