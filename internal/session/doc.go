// Package session holds the session actor: one protoactor-go actor per
// connection, which owns that connection's outbound queue and decides what
// is written to it, and when.
//
// A Session is the handle the rest of Troupe (and user code) holds. A send
// is admitted on the sender's goroutine with atomics alone (the queue
// limits, and whether the session still accepts sends) and posted to the
// session actor's mailbox, whose order is the order frames are written in.
// The actor collects the frames and hands them, as one batch, to a writer
// goroutine of a pool whenever no write is in flight; the writer reports
// back to the actor when the batch is written. Closes set the session's
// state at once and tell the actor, which writes the close frame after
// everything accepted (or at once, discarding the queue, for a drop). See
// Session for the details.
//
// Nothing here knows about WebSocket libraries: the session writes to a
// transport.Conn, so it can be driven by a real connection (package
// transport) or by the in-memory MemConn that tests and benchmarks use.
package session
