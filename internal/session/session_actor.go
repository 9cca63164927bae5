package session

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"
)

// sessionActor is the session's mailbox owner, and the owner of its
// outbound queue. It never touches the network: it collects accepted
// frames and hands them to a writer goroutine, one batch at a time, so a
// slow socket never stalls the mailbox.
//
// Every session actor is built by the same Props, without its session: the
// first message NewSession posts is the *Session, and the mailbox delivers
// it before anything else can be sent to the actor.
type sessionActor struct {
	s *Session

	queue      []Frame  // accepted frames not yet handed to a writer
	queueBox   *[]Frame // where queue came from (batchPool), to go back once written
	queueBytes int
	// Under Options.Resync: what each frame of queue is (tags[i] for
	// queue[i]), and the rooms whose room.resync is in queue with no
	// frame of theirs queued after it (see resync.go).
	tags      []*Shared
	resynced  map[string]struct{}
	closeSent bool // the close frame's writer has been started
	flushing  bool // a flush is in the mailbox
}

func (a *sessionActor) Receive(ctx actor.Context) {
	if s, ok := ctx.Message().(*Session); ok {
		a.s = s
		return
	}
	s := a.s
	if s == nil {
		return // *actor.Started, delivered before the session
	}
	// A panic here would be a bug of ours; it must not reach protoactor's
	// supervisor, whose restart would build the actor again from the
	// shared Props without its session.
	defer func() {
		if r := recover(); r != nil {
			s.sys.logger.Error("troupe: panic in session actor", "session", s.id, "panic", r)
		}
	}()
	switch m := ctx.Message().(type) {
	case *Shared:
		if a.queue == nil {
			a.queueBox = batchPool.Get().(*[]Frame)
			a.queue = (*a.queueBox)[:0]
		}
		a.queue = append(a.queue, m.frame)
		a.queueBytes += len(m.frame.Data)
		if s.opts.Resync {
			a.tag(m)
		}
		if !a.flushing {
			a.flushing = true
			ctx.Send(ctx.Self(), flush{})
		}
		return
	case flush:
		a.flushing = false
	case writerIdle:
	case *writeFailed:
		s.reportWriteErr()
	case *gapNote:
		a.resync(m)
	case *closeReq:
		if m.report != nil {
			s.sys.SafeCall(func() { s.EmitError(m.report) })
		}
	case *actor.Stopped:
		// Finish stopped the actor once no writer was left, and no
		// send is accepted any more: what is still counted (in the
		// queue, or in the mailbox, whose messages a stopped actor
		// never gets) is never written.
		s.unsent(int(s.state.Load() & countMask))
		return
	default:
		return
	}
	a.pump()
}

// pump decides what happens next: drop the queue if the session is
// closing without writing it, hand the queue to a writer if none is
// running (or leave word for the running one that more is waiting), or
// write the close frame once everything accepted is out.
func (a *sessionActor) pump() {
	s := a.s
	if s.state.Load()&discardBit != 0 && len(a.queue) > 0 {
		s.unsent(len(a.queue))
		s.release(len(a.queue), a.queueBytes)
		clear(a.queue)
		a.queue, a.queueBytes = a.queue[:0], 0
		a.untagAll()
	}
	if a.closeSent {
		return
	}
	if len(a.queue) > 0 {
		if !s.claimWriter(true) {
			return // finished, or the running writer will report
		}
		batch, nbytes, box := a.queue, a.queueBytes, a.queueBox
		a.queue, a.queueBytes, a.queueBox = nil, 0, nil
		a.untagAll()
		s.sys.pool.Go(func() {
			s.write(batch, nbytes)
			if box != nil { // nil for a queue a resync began
				*box = batch
				putBatch(box)
			}
		})
		return
	}
	w := s.state.Load()
	if w&closingBit != 0 && (w&discardBit != 0 || w&countMask == 0) {
		// Nothing accepted is left in the mailbox, the queue or a write:
		// the close frame is last.
		if !s.claimWriter(false) {
			return
		}
		a.closeSent = true
		c := s.ending.Load()
		s.sys.pool.Go(func() { s.writeClose(c.code, c.reason) })
	}
}

// batchPool holds the slices the actor collects a batch in. A batch is
// handed to its writer whole, so each began as a new slice grown from
// nothing: in a fan-out profile that growth was 6–7 % of the server's time.
// The writer gives the slice back once the batch is written, which
// transport.Conn's Write allows (it keeps nothing of msgs).
var batchPool = sync.Pool{New: func() any { return new([]Frame) }}

// maxPooledBatch bounds the slices kept: one burst's long batch is not
// kept for every session after it.
const maxPooledBatch = 1024

// putBatch empties b, so that the pool keeps no message alive, and gives
// it back.
func putBatch(b *[]Frame) {
	if cap(*b) > maxPooledBatch {
		return
	}
	clear(*b)
	*b = (*b)[:0]
	batchPool.Put(b)
}

// unsent counts n accepted frames that will never be written.
func (s *Session) unsent(n int) {
	if n > 0 && s.opts.Unsent != nil {
		s.opts.Unsent.Add(uint64(n))
	}
}

// release uncounts n frames of nbytes that were written or dropped.
func (s *Session) release(n, nbytes int) {
	if n > 0 {
		s.queuedBytes.Add(-int64(nbytes))
		s.state.Add(^uint64(n - 1)) // - n; the count is at least n
	}
}
