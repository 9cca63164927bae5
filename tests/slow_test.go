package tests

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe"
)

type feedMsg struct {
	Seq int    `json:"seq"`
	Pad string `json:"pad"`
}

// TestSlowConsumerIsClosedWith1013 checks that a member that stops reading
// is closed with 1013 once its outbound queue overflows, and OnError is told
// ErrSlowConsumer, while the members that read receive every message, before
// and after. A stalled client that starts reading again gets a gap-free
// prefix of the feed and then close 1013.
func TestSlowConsumerIsClosedWith1013(t *testing.T) {
	const (
		room      = "feed"
		queue     = 64
		batch     = 32 // below queue: readers are never more than one batch behind
		msgSize   = 4 << 10
		maxFeed   = 20000
		afterFeed = 4 * batch
	)
	h := startServer(t, troupe.Config{Settings: troupe.Settings{
		MaxQueuedMessages: queue,
		// Bounds how long a writer stuck on a full socket keeps the
		// stalled connection before it is cut.
		WriteTimeout: time.Second,
	}}, smallSendBuffers())
	registerJoin(h.srv)
	troupe.Handle(h.srv, "publish", func(c *troupe.Context, m feedMsg) error {
		return c.Server().Broadcast(room, "feed", m)
	})

	readers := []*client{h.dial(t, "reader-1"), h.dial(t, "reader-2")}
	for _, r := range readers {
		r.startReading()
		r.join(t, room)
	}
	// The stalled clients never read (the late one until it overflowed):
	// their joins are seen from the server side instead of by the reply.
	stalled := h.dial(t, "stalled")
	late := h.dial(t, "late-reader")
	for _, c := range []*client{stalled, late} {
		c.write(t, mustEnvelope(t, "join", joinMsg{Room: room}, nil))
	}
	stalledS, lateS := h.rec.session(t, "stalled"), h.rec.session(t, "late-reader")
	eventually(t, "stalled clients to join", func() bool {
		return len(h.srv.RoomsOf(stalledS)) == 1 && len(h.srv.RoomsOf(lateS)) == 1
	})

	pub := h.dial(t, "publisher")
	pad := strings.Repeat("x", msgSize)
	sent := 0
	publish := func(n int) {
		t.Helper()
		for range n {
			pub.send(t, "publish", feedMsg{Seq: sent, Pad: pad})
			sent++
		}
		for _, r := range readers {
			// +1: the "joined" reply that came first.
			r.waitReceived(t, sent+1)
		}
	}
	overflowed := func(s *troupe.Session) bool {
		for _, err := range h.rec.errorsOf(s) {
			if errors.Is(err, troupe.ErrSlowConsumer) {
				return true
			}
		}
		return false
	}
	// The late reader starts reading as soon as its queue overflowed, well
	// within WriteTimeout, so the writer stuck on its full socket gets
	// through and the close frame follows.
	lateReading := false
	for !(overflowed(stalledS) && lateReading) {
		if sent >= maxFeed {
			t.Fatalf("no slow-consumer error after %d messages of %d bytes to clients that do not read", sent, msgSize)
		}
		if !lateReading && overflowed(lateS) {
			late.startReading()
			lateReading = true
			continue
		}
		publish(batch)
	}

	// The late reader must see what was written to it, without a gap, then
	// the close frame.
	if e := late.nextEnvelope(t); e.Type != "joined" {
		t.Fatalf("late reader: first message %q, want joined", e.Type)
	}
	rest, err := late.waitEnd(t)
	for i, f := range rest {
		if m := decodePayload[feedMsg](t, decodeEnvelope(t, f)); m.Seq != i {
			t.Fatalf("late reader: message %d has seq %d: a gap before the close", i, m.Seq)
		}
	}
	if code, reason := closeCode(err); code != troupe.CloseTryAgainLater {
		t.Errorf("late reader: close status %d (%s) after %d messages, want %d", code, reason, len(rest), troupe.CloseTryAgainLater)
	}

	// The feed goes on for the members that read.
	for range afterFeed / batch {
		publish(batch)
	}

	for _, s := range []*troupe.Session{stalledS, lateS} {
		if ev := h.rec.waitClose(t, s); ev.code != troupe.CloseTryAgainLater {
			t.Errorf("%s: OnClose code %d (%q), want %d", s.Header().Get(clientHeader), ev.code, ev.reason, troupe.CloseTryAgainLater)
		}
		if n := len(h.rec.closesOf(s.ID())); n != 1 {
			t.Errorf("%s: OnClose called %d times", s.Header().Get(clientHeader), n)
		}
	}

	for _, r := range readers {
		for seq := range sent {
			if m := decodePayload[feedMsg](t, r.expect(t, "feed")); m.Seq != seq {
				t.Fatalf("%s: got seq %d, want %d", r.name, m.Seq, seq)
			}
		}
		s := h.rec.session(t, r.name)
		if !s.IsOpen() {
			t.Errorf("%s: session closed, want open", r.name)
		}
		if errs := h.rec.errorsOf(s); len(errs) != 0 {
			t.Errorf("%s: OnError got %v", r.name, errs)
		}
	}
	t.Logf("overflow after %d messages of %d bytes; late reader got %d", sent-afterFeed, msgSize, len(rest))
}
