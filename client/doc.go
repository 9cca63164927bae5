// Package client is the Go client of a Troupe server: it speaks the
// envelope protocol ({"type","payload","id"}) and the built-in room
// protocol, and keeps its connection alive by itself.
//
//   - Reconnects after any disconnect with exponential backoff and full
//     jitter, trying the nodes of a cluster in turn.
//   - Heartbeats: a "ping" envelope every Options.PingInterval, answered
//     "pong"; a missing pong drops the connection (a half-open TCP
//     connection looks open for minutes), and the pings keep the server's
//     idle timeout from closing a client that only listens.
//   - Offers the "ndjson" subprotocol and splits batched frames.
//   - Request/reply with ids, the context as the timeout, error envelopes as
//     *Error.
//   - Rooms that resume: after a reconnect, to any node, every joined room
//     rejoins with since and epoch, receives what it missed, drops what it
//     has seen, and reports whether it recovered everything.
//   - Rooms that are not cut off when the client is too slow for them: a
//     room.resync from the server (it dropped messages this client did not
//     read in time) starts a catch-up from the room's history, while new
//     messages are held (bounded), so OnMessage still sees every message
//     once, in order, without a reconnect.
//   - Effectively-once publish: Room.Publish keeps each message in an
//     outbox, with a message id, until the server acknowledges it, and
//     sends it again after a reconnect; the server publishes an id once, so
//     Publish returns once with the seq every member sees.
//
// A minimal program:
//
//	c, err := client.Dial(ctx, []string{"ws://127.0.0.1:8080/ws"}, nil)
//	if err != nil { … }
//	defer c.Close()
//	sum, err := client.Request[int](ctx, c, "sum", []int{1, 2, 3})
//	room := c.Room("lobby")
//	room.OnMessage(func(m client.Message) { fmt.Println(m.Seq, m.From, string(m.Body)) })
//	_, err = room.Join(ctx, map[string]string{"name": "ann"})
//	seq, err := room.Publish(ctx, map[string]string{"text": "hi"})
//
// The client depends on github.com/coder/websocket only, never on the
// server. Connections go through a Transport (Options.Transport): WebSocket
// is the default, and another transport plugs in there.
package client
