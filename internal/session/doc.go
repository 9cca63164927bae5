// Package actors holds the session actor: one protoactor-go actor per
// WebSocket connection whose mailbox serialises everything written to that
// connection.
//
// A Session is the handle the rest of Troupe (and user code) holds. Sends go
// through the session actor's mailbox into a bounded outbound queue; a writer
// goroutine, started only while the queue has frames, drains it to the Conn.
// Nothing here knows about WebSocket libraries: the session writes to the
// small Conn interface, so it can be driven by a real connection
// (transport) or by the in-memory MemConn that tests and benchmarks use.
package session
