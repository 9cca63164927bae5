// Package actors is the public face of Troupe's session actors, for code
// that extends Troupe below the application layer (a transport, a room
// store, a library of room logic) and needs to name a session without
// importing the application package.
//
// Every client connection is a session: a protoactor-go actor whose mailbox
// serialises what is written to the connection. Sends from any goroutine
// are counted against the session's queue limits and posted to the mailbox;
// the actor hands queued frames to a writer that exists only while there is
// something to write, so a slow connection never stalls a sender and an
// idle one holds no goroutine. Close, a slow-consumer overflow and a
// dropped connection go through the same actor, so frames leave in the
// order they were accepted, never two writes at once, and OnClose runs
// exactly once.
//
// Applications use troupe.Session, the same type.
package actors

import "github.com/troupehq/troupe/internal/session"

// Session is one client connection's session actor handle; it is
// troupe.Session.
type Session = session.Session
