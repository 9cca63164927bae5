// Package session holds the session actor: one protoactor-go actor per
// connection whose mailbox serialises everything written to that
// connection.
//
// A Session is the handle the rest of Troupe (and user code) holds. Sends go
// through the session actor's mailbox into a bounded outbound queue; a writer
// goroutine, started only while the queue has frames, hands what is queued
// to the connection as one batch. Nothing here knows about WebSocket
// libraries: the session writes to a transport.Conn, so it can be driven
// by a real connection (package transport) or by the in-memory MemConn
// that tests and benchmarks use.
package session
