// Package rooms runs chat rooms as actors: a supervisor actor with one child
// actor per room, spawned on the first join and stopped when the last member
// leaves.
//
// A room actor is the single writer of its room: joins, leaves, broadcasts
// and the application's room logic all pass through its mailbox, so every
// member sees one order. It watches its members' session actors, so a session
// that closes leaves every room without anyone asking. When room logic
// panics, the supervisor restarts that room alone; the membership lives
// outside the actor instance, so it survives the restart.
//
// Under the room protocol a room can span several server nodes through a
// Backplane: the backplane holds the room's log, and the room actor of each
// node with members in the room relays it to them (see Backplane).
package hub
