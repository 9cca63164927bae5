package session

import (
	"time"

	"github.com/troupehq/troupe/internal/wire"
)

// Resync instead of cut-off (Options.Resync). Room-protocol traffic
// (room.message, presence.diff) can be read again from the room's history,
// so a session whose queue overflows with it need not be closed: the frame
// that did not fit is refused, the room traffic still queued is dropped,
// and the client is sent, for each room that lost frames, one
// {"type":"room.resync","payload":{"room":r,"seq":N}}, N being the room's
// last message before the first frame it lost. Everything up to N was (or
// is being) written in order, so the client fetches what follows N from
// the history, at its own pace, while new messages keep coming.
//
// What one session can hold stays bounded: room traffic is admitted into
// three quarters of the queue's limits and other frames into all of it (so
// a history page the client asks for finds room), a resync adds one frame
// per room that lost frames, and the set of rooms told to resync is capped
// at maxResynced. A session that keeps overflowing for longer than MaxLag,
// its queue never draining and every write meanwhile finishing after a
// new refusal, is closed with CloseTryAgainLater, as is one whose other
// frames overflow.

// maxResynced caps the rooms a session remembers having told to resync.
// Forgetting them is safe: the client may then get a second room.resync
// for a gap it is already catching up on, which it takes as a no-op.
const maxResynced = 256

// overflowReason and lagReason are the reasons of the 1013 closes.
const (
	overflowReason = "slow consumer: outbound queue full"
	lagReason      = "slow consumer: behind for too long"
)

// ShareRoom is Share for room-protocol traffic of room: a room.message or
// presence.diff, after is the seq of the room's last message before it (a
// room.message's own seq minus one). Under Options.Resync an overflow drops
// such frames and tells the client to resync instead of closing it.
func ShareRoom(f Frame, room string, after uint64) *Shared {
	return &Shared{frame: f, room: room, after: after}
}

// gapNote tells the actor that a frame of room was refused for a full
// queue. It is posted by the sender right after the refusal, so it follows
// in the mailbox every frame that sender queued before it.
type gapNote struct {
	room  string
	after uint64
}

// gap reports a refused frame of room traffic to the actor.
func (s *Session) gap(sh *Shared) {
	s.gapped.Store(true)
	s.sys.root.Send(s.pid, &gapNote{room: sh.room, after: sh.after})
}

// caughtUp ends the session's lag once a write left nothing queued, or
// finished with no room frame refused since the previous write: a member
// of a busy room may keep up without its queue ever emptying.
func (s *Session) caughtUp() {
	gapped := s.gapped.Swap(false)
	if s.lagSince.Load() != 0 && (!gapped || s.state.Load()&countMask == 0) {
		s.lagSince.Store(0)
	}
}

// tag records what the frame just queued is.
func (a *sessionActor) tag(m *Shared) {
	a.tags = append(a.tags, m)
	if m.room != "" && len(a.resynced) > 0 {
		delete(a.resynced, m.room)
	}
}

// untagAll forgets the tags of a queue handed to a writer or dropped. The
// room.resync frames in it leave with it, so the rooms they told are
// forgotten too: "told" means a marker is still queued, and a room whose
// marker was written must get a new one at its next gap.
func (a *sessionActor) untagAll() {
	clear(a.tags)
	a.tags = a.tags[:0]
	clear(a.resynced)
}

// resync handles a refused frame of room traffic: it drops the room
// traffic queued and puts in the place of each room's first dropped frame
// a room.resync (unless that room's marker is still queued and no frame of
// it was queued after it), then one for the refused frame's room if it had nothing
// queued. A session behind for longer than MaxLag is closed instead.
func (a *sessionActor) resync(g *gapNote) {
	s := a.s
	if s.state.Load()&(closingBit|finishedBit) != 0 {
		return
	}
	now := time.Now().UnixNano()
	if since := s.lagSince.Load(); since == 0 {
		s.lagSince.Store(now)
	} else if time.Duration(now-since) > s.opts.MaxLag {
		s.overflow(lagReason)
		return
	}
	if a.resynced == nil || len(a.resynced) >= maxResynced {
		a.resynced = make(map[string]struct{})
	}
	var dropped, droppedBytes, added, addedBytes int
	tell := func(room string, after uint64) *Shared {
		if _, told := a.resynced[room]; told {
			return nil
		}
		a.resynced[room] = struct{}{}
		m := &Shared{frame: Frame{Data: resyncFrame(room, after)}}
		added++
		addedBytes += len(m.frame.Data)
		return m
	}
	// Each marker takes the place of a dropped frame, so the queue is
	// compacted in place.
	w := 0
	for i, f := range a.queue {
		t := a.tags[i]
		if t.room == "" {
			a.queue[w], a.tags[w] = f, t
			w++
			continue
		}
		dropped++
		droppedBytes += len(f.Data)
		if m := tell(t.room, t.after); m != nil {
			a.queue[w], a.tags[w] = m.frame, m
			w++
		}
	}
	clear(a.queue[w:])
	clear(a.tags[w:])
	a.queue, a.tags = a.queue[:w], a.tags[:w]
	if m := tell(g.room, g.after); m != nil {
		a.queue = append(a.queue, m.frame)
		a.tags = append(a.tags, m)
	}
	// The markers are counted before the dropped frames are uncounted,
	// so that the count never goes below what is queued.
	if added > 0 {
		s.queuedBytes.Add(int64(addedBytes))
		s.state.Add(uint64(added))
		s.sys.resyncs.Add(uint64(added))
	}
	s.release(dropped, droppedBytes)
	a.queueBytes += addedBytes - droppedBytes
	// Receive pumps next: the markers go to a writer.
}

// resyncFrame is {"type":"room.resync","payload":{"room":room,"seq":after}}.
func resyncFrame(room string, after uint64) []byte {
	p := append(make([]byte, 0, 32+len(room)), `{"room":`...)
	p = wire.AppendString(p, room)
	p = append(p, `,"seq":`...)
	p = wire.AppendUint(p, after)
	p = append(p, '}')
	return wire.Envelope(nil, "room.resync", nil, p)
}
