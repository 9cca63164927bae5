package session

// Messages of the session actor's mailbox.

// Shared is a frame made ready to be queued on many sessions: a broadcast
// makes one and hands the same pointer to every member's mailbox, so a
// message to N members costs one allocation, not N.
type Shared struct {
	frame Frame
	// room is set on room-protocol traffic (room.message, presence.diff)
	// of that room, which an overflow may drop for a room.resync instead
	// of closing the session (see resync.go); after is the seq of the
	// room's last message before this frame.
	room  string
	after uint64
}

// Share prepares f for SendShared. f.Data must not be modified afterwards.
func Share(f Frame) *Shared { return &Shared{frame: f} }

// closeReq is a close that was asked for. It is both what Session.ending
// holds (the close in effect, readable from any goroutine) and the message
// that tells the actor to act on it: the state bits are set before it is
// posted, so the actor may see the close before the message arrives.
type closeReq struct {
	code    int
	reason  string
	discard bool  // drop what is queued instead of writing it
	report  error // for OnError, from the actor (a slow consumer)
}

// flush is the actor's note to itself to hand its queue to a writer. It is
// posted behind the frames already in the mailbox when the first of them
// arrives, so that a burst leaves as one batch (one system call) rather
// than its first frame alone and the rest after a round trip.
type flush struct{}

// writerIdle is the writer's word that it is done and the actor has
// something to do: frames queued meanwhile, or a close to finish.
type writerIdle struct{}

// writeFailed is the writer's word that a write failed in a way OnError
// should hear about (the session is already closing). The error itself
// waits in Session.writeErr, for whichever of the actor and Finish takes
// it first: Finish may stop the actor before it gets this message.
type writeFailed struct{}
