package session_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

func resyncText(room string, seq string) string {
	return `{"type":"room.resync","payload":{"room":"` + room + `","seq":` + seq + `}}`
}

// roomSend queues text as room traffic of room, after the room's message
// after.
func roomSend(s *session.Session, room string, after uint64, text string) error {
	return session.SendShared(s, session.ShareRoom(session.Frame{Data: []byte(text)}, room, after))
}

// TestResyncDropsRoomTrafficAndTellsTheLastSeq checks what a client reads
// when room traffic overflows its queue under Resync: everything written
// before the overflow, then, in the place of each room's first dropped
// frame, one room.resync naming the last message of that room it got; the
// other frames in their order, and what is queued after; the session stays
// open and its queue count returns to zero.
func TestResyncDropsRoomTrafficAndTellsTheLastSeq(t *testing.T) {
	const limit = 8 // room traffic: 6
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{MaxQueuedMessages: limit, Resync: true}))

	conn.Block()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(roomSend(s, "a", 0, "a1"))
	// The actor's flush note follows the first barrier: after the second
	// a writer has a1 and blocks on it.
	barrier(t, sys, s)
	barrier(t, sys, s)
	must(roomSend(s, "a", 1, "a2"))
	must(roomSend(s, "a", 2, "a3"))
	must(s.SendText([]byte("reply")))
	must(roomSend(s, "b", 0, "b1"))
	must(roomSend(s, "a", 3, "a4"))
	if err := roomSend(s, "a", 4, "a5"); !errors.Is(err, session.ErrResynced) {
		t.Fatalf("room traffic past three quarters of the queue: %v, want ErrResynced", err)
	}
	barrier(t, sys, s)
	if !s.IsOpen() {
		t.Fatal("session closed by an overflow of room traffic")
	}
	must(roomSend(s, "a", 5, "a6"))
	conn.Unblock()

	want := []string{"a1", resyncText("a", "1"), "reply", resyncText("b", "0"), "a6"}
	conn.WaitCount(len(want), wait)
	barrier(t, sys, s)
	if got := texts(conn.Frames()); !slices.Equal(got, want) {
		t.Fatalf("client read\n%q\nwant\n%q", got, want)
	}
	if n := session.QueueLen(s); n != 0 {
		t.Errorf("queue count %d after everything was written, want 0", n)
	}
	if n := sys.Resyncs(); n != 2 {
		t.Errorf("Resyncs() = %d, want 2", n)
	}
	if n := sys.Overflows(); n != 0 {
		t.Errorf("Overflows() = %d, want 0", n)
	}
}

// TestResyncStillClosesForOtherFrames checks that under Resync a frame that
// is not room traffic still closes the session with 1013 when the queue is
// full: replies and the application's own frames cannot be read again.
func TestResyncStillClosesForOtherFrames(t *testing.T) {
	const limit = 4
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{MaxQueuedMessages: limit, Resync: true}))
	conn.Block()
	for i := range limit {
		if err := s.SendText([]byte{'0' + byte(i)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := s.SendText([]byte("over")); !errors.Is(err, session.ErrSlowConsumer) {
		t.Fatalf("a reply past the limit: %v, want ErrSlowConsumer", err)
	}
	conn.Unblock()
	if code, reason := waitClosed(t, conn); code != session.CloseTryAgainLater {
		t.Fatalf("closed with %d %q, want 1013", code, reason)
	}
}

// TestResyncMaxLag checks the bound on a session that stays behind: one
// whose room traffic keeps overflowing for longer than MaxLag, its queue
// never draining meanwhile, is closed with 1013 and reported as a slow
// consumer.
func TestResyncMaxLag(t *testing.T) {
	const limit = 4 // room traffic: 3
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{MaxQueuedMessages: limit, Resync: true, MaxLag: 50 * time.Millisecond}))
	conn.Block()
	fill := func(from uint64) {
		for i := from; i < from+10; i++ {
			_ = roomSend(s, "a", i, "m")
		}
		barrier(t, sys, s)
	}
	fill(0)
	if !s.IsOpen() {
		t.Fatal("closed at the first overflow")
	}
	time.Sleep(100 * time.Millisecond)
	fill(10)
	if s.IsOpen() {
		t.Fatal("still open, behind for longer than MaxLag")
	}
	if err := h.nextError(t); !errors.Is(err, session.ErrSlowConsumer) {
		t.Fatalf("OnError got %v, want ErrSlowConsumer", err)
	}
	conn.Unblock()
	code, reason := waitClosed(t, conn)
	if code != session.CloseTryAgainLater || !strings.Contains(reason, "behind") {
		t.Fatalf("closed with %d %q, want 1013 behind for too long", code, reason)
	}
	if n := sys.Overflows(); n != 1 {
		t.Errorf("Overflows() = %d, want 1", n)
	}
}

// TestResyncTellsAQuietRoomAgain checks that a room told to resync once is
// told again at its next gap: a quiet room whose room.resync was written
// (and acted on by the client) must not lose its next refused message in
// silence when the queue overflows again later.
func TestResyncTellsAQuietRoomAgain(t *testing.T) {
	const limit = 8 // room traffic: 6
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{MaxQueuedMessages: limit, Resync: true}))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// overflow blocks a writer on busy room s's message after+1, queues
	// pre and s's next messages up to the limit, then has refuse send a
	// frame of room traffic that does not fit.
	overflow := func(after uint64, pre func(), refuse func() error) {
		t.Helper()
		conn.Block()
		must(roomSend(s, "s", after, "s"+strconv.FormatUint(after+1, 10)))
		barrier(t, sys, s)
		barrier(t, sys, s)
		pre()
		for session.QueueLen(s) < 6 {
			after++
			must(roomSend(s, "s", after, "s"+strconv.FormatUint(after+1, 10)))
		}
		if err := refuse(); !errors.Is(err, session.ErrResynced) {
			t.Fatalf("room traffic past the limit: %v, want ErrResynced", err)
		}
		barrier(t, sys, s)
		conn.Unblock()
	}
	// The first overflow drops quiet room r's r1.
	overflow(0, func() { must(roomSend(s, "r", 0, "r1")) }, func() error { return roomSend(s, "s", 5, "over") })
	want := []string{"s1", resyncText("r", "0"), resyncText("s", "1")}
	conn.WaitCount(len(want), wait)
	barrier(t, sys, s)
	// The second refuses r's r2: r must be told again.
	overflow(10, func() {}, func() error { return roomSend(s, "r", 1, "r2") })
	must(roomSend(s, "r", 2, "r3"))
	want = append(want, "s11", resyncText("s", "11"), resyncText("r", "1"), "r3")
	conn.WaitCount(len(want), wait)
	barrier(t, sys, s)
	if got := texts(conn.Frames()); !slices.Equal(got, want) {
		t.Fatalf("client read\n%q\nwant\n%q", got, want)
	}
}

// TestResyncLagEndsWhenKeepingUp checks that a session that overflowed
// once and then keeps up is not closed at its next overflow, MaxLag later,
// though its queue never emptied meanwhile (a member of a busy room
// always has the next message queued): a write that finishes with no room
// frame refused since the previous one ends the lag.
func TestResyncLagEndsWhenKeepingUp(t *testing.T) {
	const limit = 4 // room traffic: 3
	const maxLag = 50 * time.Millisecond
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{MaxQueuedMessages: limit, Resync: true, MaxLag: maxLag}))
	conn.Block()
	seq := uint64(0)
	send := func() error {
		seq++
		return roomSend(s, "a", seq-1, "m"+strconv.FormatUint(seq, 10))
	}
	overflow := func() {
		t.Helper()
		for i := 0; i < 10; i++ {
			_ = send()
		}
		barrier(t, sys, s)
		if !s.IsOpen() {
			t.Fatal("closed at an overflow after keeping up")
		}
	}
	overflow()
	// Keeping up, for twice MaxLag: each write finishes with the next
	// message already queued.
	for start := time.Now(); time.Since(start) < 2*maxLag; {
		if err := send(); err != nil {
			t.Fatalf("a message while keeping up: %v", err)
		}
		n := conn.Count()
		conn.Step()
		conn.WaitCount(n+1, wait)
		barrier(t, sys, s)
		if session.QueueLen(s) == 0 {
			t.Fatal("the queue drained: this test needs it never to")
		}
		time.Sleep(5 * time.Millisecond)
	}
	overflow()
	conn.Unblock()
}
