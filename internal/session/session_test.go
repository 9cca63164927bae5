package session_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/transport"
)

// wait bounds every wait for an event that should come promptly; it only
// keeps a broken implementation from hanging the test run.
const wait = 5 * time.Second

// newSystem returns an actor system that is shut down when the test ends,
// after every session the test created has been finished.
func newSystem(t *testing.T) *session.System {
	t.Helper()
	sys := session.NewSystem(nil)
	t.Cleanup(sys.Shutdown)
	return sys
}

// newSession creates a session on conn and finishes it when the test ends,
// as the transport does once a connection is gone.
func newSession(t *testing.T, sys *session.System, conn transport.Conn, opts session.Options) *session.Session {
	t.Helper()
	s := sys.NewSession(conn, session.Info{}, opts)
	t.Cleanup(func() { session.Finish(s, session.CloseAbnormal, "test over") })
	return s
}

// barrier returns once the session actor has handled every message posted
// to it before the call: the mailbox is first in, first out, and Touch is
// answered by the actor itself.
func barrier(t *testing.T, sys *session.System, s *session.Session) {
	t.Helper()
	if _, err := sys.Root().RequestFuture(session.PID(s), &actor.Touch{}, wait).Result(); err != nil {
		t.Fatalf("session actor did not answer: %v", err)
	}
}

// waitClosed waits until the session closed conn and returns the close code
// and reason it used.
func waitClosed(t *testing.T, conn *session.MemConn) (int, string) {
	t.Helper()
	conn.WaitCount(math.MaxInt, wait)
	closed, code, reason := conn.Closed()
	if !closed {
		t.Fatalf("connection was not closed within %v", wait)
	}
	return code, reason
}

type closeEvent struct {
	code   int
	reason string
}

// hooks records what a session reports through OnError and OnClose.
type hooks struct {
	closes  chan closeEvent
	errs    chan error
	nCloses atomic.Int32
}

func newHooks() *hooks {
	return &hooks{closes: make(chan closeEvent, 16), errs: make(chan error, 64)}
}

// options returns o with OnError and OnClose wired to h.
func (h *hooks) options(o session.Options) session.Options {
	o.OnError = func(_ *session.Session, err error) {
		select {
		case h.errs <- err:
		default:
		}
	}
	o.OnClose = func(_ *session.Session, code int, reason string) {
		h.nCloses.Add(1)
		select {
		case h.closes <- closeEvent{code, reason}:
		default:
		}
	}
	return o
}

func (h *hooks) nextClose(t *testing.T) closeEvent {
	t.Helper()
	select {
	case ev := <-h.closes:
		return ev
	case <-time.After(wait):
		t.Fatal("OnClose was not called")
		return closeEvent{}
	}
}

func (h *hooks) nextError(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.errs:
		return err
	case <-time.After(wait):
		t.Fatal("OnError was not called")
		return nil
	}
}

func texts(frames []session.Frame) []string {
	out := make([]string, len(frames))
	for i, f := range frames {
		out[i] = string(f.Data)
	}
	return out
}

// checkPerSenderOrder asserts that msgs ("sender/seq") hold every message
// of every sender exactly once, each sender's in the order it sent them.
func checkPerSenderOrder(t *testing.T, msgs []string, senders, perSender int) {
	t.Helper()
	if len(msgs) != senders*perSender {
		t.Fatalf("got %d messages, want %d", len(msgs), senders*perSender)
	}
	next := make([]int, senders)
	for _, m := range msgs {
		g, seq, ok := strings.Cut(m, "/")
		gi, err1 := strconv.Atoi(g)
		si, err2 := strconv.Atoi(seq)
		if !ok || err1 != nil || err2 != nil || gi < 0 || gi >= senders {
			t.Fatalf("unexpected message %q", m)
		}
		if si != next[gi] {
			t.Fatalf("sender %d: got message %d, want %d (out of order or lost)", gi, si, next[gi])
		}
		next[gi]++
	}
}

// sendConcurrently has each of senders goroutines send perSender numbered
// text frames, and fails the test on any send error.
func sendConcurrently(t *testing.T, s *session.Session, senders, perSender int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Go(func() {
			for i := range perSender {
				if err := s.SendText([]byte(fmt.Sprintf("%d/%d", g, i))); err != nil {
					errs <- fmt.Errorf("sender %d, frame %d: %w", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestConcurrentSendersKeepTheirOrder(t *testing.T) {
	const senders, perSender = 8, 250
	sys := newSystem(t)
	conn := session.NewMemConn()
	s := newSession(t, sys, conn, session.Options{MaxQueuedMessages: senders * perSender})

	sendConcurrently(t, s, senders, perSender)

	if n := conn.WaitCount(senders*perSender, wait); n != senders*perSender {
		t.Fatalf("%d frames written, want %d", n, senders*perSender)
	}
	frames := conn.Frames()
	for _, f := range frames {
		if f.Binary {
			t.Fatalf("text frame %q written as binary", f.Data)
		}
	}
	checkPerSenderOrder(t, texts(frames), senders, perSender)
	if n := conn.Overlaps(); n != 0 {
		t.Fatalf("%d writes overlapped another write", n)
	}
}

func TestCloseDrainsAcceptedFramesThenSendsCloseFrame(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{}))

	conn.Block()
	var want []string
	for i := range 10 {
		msg := fmt.Sprintf("frame %d", i)
		want = append(want, msg)
		if err := s.SendText([]byte(msg)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := s.Close("bye"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s.IsOpen() {
		t.Fatal("IsOpen is true after Close")
	}
	if err := s.SendText([]byte("late")); !errors.Is(err, session.ErrClosed) {
		t.Fatalf("send after Close: got %v, want ErrClosed", err)
	}

	// The close request has reached the actor, but the client has not read
	// the queued frames: the close frame must wait for them.
	barrier(t, sys, s)
	if closed, _, _ := conn.Closed(); closed {
		t.Fatal("connection closed before the queued frames were written")
	}

	conn.Unblock()
	code, reason := waitClosed(t, conn)
	if code != session.CloseNormal || reason != "bye" {
		t.Fatalf("closed with %d %q, want %d %q", code, reason, session.CloseNormal, "bye")
	}
	// MemConn refuses writes once closed, so every frame recorded was
	// written before the close frame.
	if got := texts(conn.Frames()); !slices.Equal(got, want) {
		t.Fatalf("frames written:\n got %q\nwant %q", got, want)
	}
	if ctxErr := s.Context().Err(); ctxErr != nil {
		t.Fatalf("context cancelled before Finish: %v", ctxErr)
	}

	// The transport calls Finish once the peer answered the close; OnClose
	// reports the code this side sent, not the peer's echo.
	session.Finish(s, session.CloseNoStatus, "")
	if ev := h.nextClose(t); ev.code != session.CloseNormal || ev.reason != "bye" {
		t.Fatalf("OnClose(%d, %q), want (%d, %q)", ev.code, ev.reason, session.CloseNormal, "bye")
	}
}

func TestCloseWithCutsLongReason(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	s := newSession(t, sys, conn, session.Options{})

	long := strings.Repeat("r", 200)
	s.CloseWith(4001, long)
	code, reason := waitClosed(t, conn)
	if code != 4001 {
		t.Fatalf("close code %d, want 4001", code)
	}
	// RFC 6455 leaves 123 bytes for the reason in a close frame.
	if reason != long[:123] {
		t.Fatalf("reason of %d bytes, want the first 123 bytes of the given reason", len(reason))
	}
}

func TestSendsAfterCloseReturnErrClosed(t *testing.T) {
	closers := map[string]func(s *session.Session){
		"Close":       func(s *session.Session) { s.Close("bye") },
		"CloseWith":   func(s *session.Session) { s.CloseWith(4000, "custom") },
		"ShutdownNow": func(s *session.Session) { session.Drop(s, "shutdown") },
		"Drop":        func(s *session.Session) { session.Drop(s, "pong timeout") },
		"Finish":      func(s *session.Session) { session.Finish(s, session.CloseGoingAway, "peer left") },
	}
	for name, closeIt := range closers {
		t.Run(name, func(t *testing.T) {
			sys := newSystem(t)
			conn := session.NewMemConn()
			s := newSession(t, sys, conn, session.Options{Encode: encodeEnvelope})

			closeIt(s)
			if s.IsOpen() {
				t.Fatal("IsOpen is true after closing")
			}
			sends := map[string]func() error{
				"SendText":   func() error { return s.SendText([]byte("x")) },
				"SendBinary": func() error { return s.SendBinary([]byte{1}) },
				"SendFrame":  func() error { return session.SendFrame(s, session.Frame{Data: []byte("x")}) },
				"Send":       func() error { return s.Send("t", map[string]int{"n": 1}) },
			}
			for sendName, send := range sends {
				for range 3 {
					if err := send(); !errors.Is(err, session.ErrClosed) {
						t.Fatalf("%s after %s: got %v, want ErrClosed", sendName, name, err)
					}
				}
			}
			if n := session.QueueLen(s); n != 0 {
				t.Fatalf("QueueLen = %d after refused sends, want 0", n)
			}
			// Closing again, by any means, must be harmless.
			for _, again := range closers {
				again(s)
			}
			waitClosed(t, conn)
			if n := len(conn.Frames()); n != 0 {
				t.Fatalf("%d data frames written after close", n)
			}
		})
	}
}

func TestCloseOnceUnderConcurrentClosers(t *testing.T) {
	type outcome struct {
		code   int
		reason string
	}
	plausible := []outcome{
		{session.CloseNormal, "close"},
		{4000, "closewith"},
		{session.CloseAbnormal, "shutdown"},
		{session.CloseAbnormal, "drop"},
		{session.CloseGoingAway, "peer"},
	}
	for round := range 20 {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			sys := newSystem(t)
			conn := session.NewMemConn()
			h := newHooks()
			s := sys.NewSession(conn, session.Info{}, h.options(session.Options{}))

			start := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() { <-start; s.Close("close") })
				wg.Go(func() { <-start; s.CloseWith(4000, "closewith") })
				wg.Go(func() { <-start; session.Drop(s, "shutdown") })
				wg.Go(func() { <-start; session.Drop(s, "drop") })
				wg.Go(func() { <-start; session.Finish(s, session.CloseGoingAway, "peer") })
				wg.Go(func() {
					<-start
					for i := range 50 {
						if err := s.SendText([]byte(strconv.Itoa(i))); err != nil && !errors.Is(err, session.ErrClosed) {
							t.Errorf("send during close: %v", err)
							return
						}
					}
				})
			}
			close(start)
			wg.Wait()
			session.Finish(s, session.CloseAbnormal, "late")

			if n := h.nCloses.Load(); n != 1 {
				t.Fatalf("OnClose called %d times, want 1", n)
			}
			ev := <-h.closes
			if !slices.Contains(plausible, outcome(ev)) {
				t.Fatalf("OnClose(%d, %q) matches none of the closers", ev.code, ev.reason)
			}
			if s.IsOpen() {
				t.Fatal("session still open")
			}
			if s.Context().Err() == nil {
				t.Fatal("context not cancelled after Finish")
			}
			if n := conn.Overlaps(); n != 0 {
				t.Fatalf("%d overlapping writes", n)
			}
		})
	}
}

func TestSlowConsumerMessageLimit(t *testing.T) {
	const limit = 8
	sys := newSystem(t)
	slowConn, fastConn := session.NewMemConn(), session.NewMemConn()
	h := newHooks()
	slow := newSession(t, sys, slowConn, h.options(session.Options{MaxQueuedMessages: limit}))
	fast := newSession(t, sys, fastConn, session.Options{})

	slowConn.Block()
	var sent []string
	for i := range limit {
		msg := fmt.Sprintf("m%d", i)
		if err := slow.SendText([]byte(msg)); err != nil {
			t.Fatalf("send %d of %d within the limit: %v", i+1, limit, err)
		}
		sent = append(sent, msg)
	}
	if err := slow.SendText([]byte("overflow")); !errors.Is(err, session.ErrSlowConsumer) {
		t.Fatalf("send past the limit: got %v, want ErrSlowConsumer", err)
	}
	if slow.IsOpen() {
		t.Fatal("slow session still open after overflowing")
	}
	if err := slow.SendText([]byte("after")); !errors.Is(err, session.ErrClosed) {
		t.Fatalf("send after overflow: got %v, want ErrClosed", err)
	}
	if err := h.nextError(t); !errors.Is(err, session.ErrSlowConsumer) {
		t.Fatalf("OnError got %v, want ErrSlowConsumer", err)
	}

	// A stuck client must not hold up anyone else.
	const fastFrames = 200
	for i := range fastFrames {
		if err := fast.SendText([]byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("fast session send %d: %v", i, err)
		}
	}
	if n := fastConn.WaitCount(fastFrames, wait); n != fastFrames {
		t.Fatalf("fast session wrote %d frames while the slow one was stuck, want %d", n, fastFrames)
	}

	// Depending on whether the writer had taken a frame before the
	// overflow, the conn is closed already or closes once that write
	// returns; either way with 1013.
	slowConn.Unblock()
	code, reason := waitClosed(t, slowConn)
	if code != session.CloseTryAgainLater {
		t.Fatalf("slow conn closed with %d %q, want %d", code, reason, session.CloseTryAgainLater)
	}
	// Whatever reached the client is what was accepted, in order: frames
	// are dropped from the tail, never from the middle.
	got := texts(slowConn.Frames())
	if len(got) > len(sent) || !slices.Equal(got, sent[:len(got)]) {
		t.Fatalf("slow conn got %q, want a prefix of %q", got, sent)
	}

	session.Finish(slow, session.CloseAbnormal, "")
	if ev := h.nextClose(t); ev.code != session.CloseTryAgainLater {
		t.Fatalf("OnClose code %d, want %d", ev.code, session.CloseTryAgainLater)
	}
	if got := texts(fastConn.Frames()); len(got) != fastFrames || got[fastFrames-1] != strconv.Itoa(fastFrames-1) {
		t.Fatalf("fast session frames incomplete: %d frames", len(got))
	}
}

func TestSlowConsumerByteLimit(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{MaxQueuedBytes: 100}))

	conn.Block()
	chunk := bytes.Repeat([]byte("a"), 40)
	for i := range 2 {
		if err := s.SendText(chunk); err != nil {
			t.Fatalf("send %d (%d of 100 bytes queued): %v", i, (i+1)*40, err)
		}
	}
	if err := s.SendText(chunk); !errors.Is(err, session.ErrSlowConsumer) {
		t.Fatalf("send to 120 of 100 bytes: got %v, want ErrSlowConsumer", err)
	}
	if err := h.nextError(t); !errors.Is(err, session.ErrSlowConsumer) {
		t.Fatalf("OnError got %v, want ErrSlowConsumer", err)
	}
	conn.Unblock()
	if code, _ := waitClosed(t, conn); code != session.CloseTryAgainLater {
		t.Fatalf("closed with %d, want %d", code, session.CloseTryAgainLater)
	}
}

func TestOversizedFrameAloneIsAccepted(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	s := newSession(t, sys, conn, session.Options{MaxQueuedBytes: 100})

	conn.Block()
	big := bytes.Repeat([]byte("b"), 250)
	// Refusing a frame larger than the limit on an empty queue would make
	// that frame impossible to send at all.
	if err := s.SendText(big); err != nil {
		t.Fatalf("oversized frame on an empty queue: %v", err)
	}
	if err := s.SendText([]byte("x")); !errors.Is(err, session.ErrSlowConsumer) {
		t.Fatalf("send behind an oversized frame: got %v, want ErrSlowConsumer", err)
	}
	conn.Unblock()
	if code, _ := waitClosed(t, conn); code != session.CloseTryAgainLater {
		t.Fatalf("closed with %d, want %d", code, session.CloseTryAgainLater)
	}
}

// The writer hands the connection everything queued at the moment it
// starts, as one batch of separate messages: how a batch goes on the wire
// is the connection's business.
func TestQueuedFramesLeaveAsOneBatch(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	s := newSession(t, sys, conn, session.Options{})

	conn.Block()
	want := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for _, m := range want {
		if err := s.SendText([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	// Every frame is now with the actor or the writer, which is stuck on
	// its first batch.
	barrier(t, sys, s)
	conn.Unblock()
	if n := conn.WaitCount(len(want), wait); n != len(want) {
		t.Fatalf("%d frames written, want %d", n, len(want))
	}
	if got := texts(conn.Frames()); !slices.Equal(got, want) {
		t.Fatalf("frames %q, want %q", got, want)
	}
	// One batch for what the writer took before it blocked, one for the
	// rest.
	if n := conn.Batches(); n > 2 {
		t.Fatalf("%d batches for %d frames queued behind a blocked write, want at most 2", n, len(want))
	}
}

func TestShutdownNowDiscardsQueueAndCutsConnection(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{}))

	conn.Block()
	for i := range 5 {
		if err := s.SendText([]byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	session.Drop(s, "shutdown")
	// ShutdownNow does not wait for the client: the connection is cut
	// before it returns, with nothing written.
	closed, code, _ := conn.Closed()
	if !closed || code != session.CloseAbnormal {
		t.Fatalf("after ShutdownNow: closed=%v code=%d, want closed with %d", closed, code, session.CloseAbnormal)
	}
	if n := len(conn.Frames()); n != 0 {
		t.Fatalf("%d frames written to a blocked client after ShutdownNow", n)
	}

	session.Finish(s, session.CloseAbnormal, "")
	if ev := h.nextClose(t); ev.code != session.CloseAbnormal || ev.reason != "shutdown" {
		t.Fatalf("OnClose(%d, %q), want (%d, %q)", ev.code, ev.reason, session.CloseAbnormal, "shutdown")
	}
}

func TestShutdownNowOverridesGracefulClose(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{}))

	conn.Block()
	for i := range 5 {
		if err := s.SendText([]byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close("bye")
	// A graceful close stuck behind a client that does not read must not
	// stop a server from cutting it.
	session.Drop(s, "shutdown")
	if closed, code, _ := conn.Closed(); !closed || code != session.CloseAbnormal {
		t.Fatalf("after ShutdownNow: closed=%v code=%d, want closed with %d", closed, code, session.CloseAbnormal)
	}
	session.Finish(s, session.CloseAbnormal, "")
	if ev := h.nextClose(t); ev.code != session.CloseAbnormal {
		t.Fatalf("OnClose code %d, want %d", ev.code, session.CloseAbnormal)
	}
}

func TestFinishDoesNotWaitForABlockedClient(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{}))

	conn.Block()
	if err := s.SendText([]byte("stuck")); err != nil {
		t.Fatal(err)
	}
	barrier(t, sys, s)

	done := make(chan struct{})
	go func() {
		defer close(done)
		session.Finish(s, session.CloseAbnormal, "connection lost")
	}()
	select {
	case <-done:
	case <-time.After(wait):
		conn.Unblock() // let the stuck goroutine go before failing
		<-done
		t.Fatal("Finish hung on a writer blocked in Write")
	}
	if ev := h.nextClose(t); ev.code != session.CloseAbnormal || ev.reason != "connection lost" {
		t.Fatalf("OnClose(%d, %q), want (%d, %q)", ev.code, ev.reason, session.CloseAbnormal, "connection lost")
	}
}

// failConn is a Conn whose writes fail, like a socket reset by the peer.
type failConn struct {
	once   sync.Once
	closed chan struct{}
	code   atomic.Int32
	err    error // what Write fails with
}

// errTimeout is a write that hit the write deadline: a client too slow to
// take its batch, which OnError hears about.
var errTimeout = fmt.Errorf("write tcp: %w", os.ErrDeadlineExceeded)

// errReset is a connection that went away, which only OnClose reports.
var errReset = errors.New("connection reset")

func (c *failConn) Read(context.Context) (session.Frame, error) {
	<-c.closed
	return session.Frame{}, errReset
}
func (c *failConn) Write([]session.Frame, time.Time) error { return c.err }
func (c *failConn) Close(code int, _ string) error {
	c.once.Do(func() { c.code.Store(int32(code)); close(c.closed) })
	return nil
}
func (c *failConn) CloseNow() error { return c.Close(session.CloseAbnormal, "") }

func TestWriteTimeoutIsReportedAndDropsSession(t *testing.T) {
	sys := newSystem(t)
	conn := &failConn{closed: make(chan struct{}), err: errTimeout}
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{}))

	if err := s.SendText([]byte("hello")); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := h.nextError(t); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("OnError got %v, want an error wrapping %v", err, os.ErrDeadlineExceeded)
	}
	select {
	case <-conn.closed:
	case <-time.After(wait):
		t.Fatal("failed connection was not closed")
	}
	if code := conn.code.Load(); code != session.CloseAbnormal {
		t.Fatalf("failed conn closed with %d, want CloseNow (%d)", code, session.CloseAbnormal)
	}
	if s.IsOpen() {
		t.Fatal("session still open after its connection failed")
	}
	if err := s.SendText([]byte("again")); !errors.Is(err, session.ErrClosed) {
		t.Fatalf("send after write failure: got %v, want ErrClosed", err)
	}
	session.Finish(s, session.CloseAbnormal, "")
	if ev := h.nextClose(t); ev.code != session.CloseAbnormal {
		t.Fatalf("OnClose code %d, want %d", ev.code, session.CloseAbnormal)
	}
}

// A connection that breaks is not an error to report: OnClose says 1006.
func TestBrokenConnectionDropsSessionWithoutError(t *testing.T) {
	sys := newSystem(t)
	conn := &failConn{closed: make(chan struct{}), err: errReset}
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{}))

	if err := s.SendText([]byte("hello")); err != nil {
		t.Fatalf("send: %v", err)
	}
	select {
	case <-conn.closed:
	case <-time.After(wait):
		t.Fatal("failed connection was not closed")
	}
	if s.IsOpen() {
		t.Fatal("session still open after its connection failed")
	}
	session.Finish(s, session.CloseAbnormal, "")
	if ev := h.nextClose(t); ev.code != session.CloseAbnormal {
		t.Fatalf("OnClose code %d, want %d", ev.code, session.CloseAbnormal)
	}
	select {
	case err := <-h.errs:
		t.Fatalf("OnError got %v for a broken connection", err)
	default:
	}
}

func TestContextCancelledAfterFinish(t *testing.T) {
	sys := newSystem(t)
	s := newSession(t, sys, session.NewMemConn(), session.Options{})

	ctx := s.Context()
	if err := ctx.Err(); err != nil {
		t.Fatalf("context of an open session: %v", err)
	}
	session.Finish(s, session.CloseNormal, "")
	select {
	case <-ctx.Done():
	case <-time.After(wait):
		t.Fatal("context not cancelled after Finish")
	}
}

type ctxKey struct{ name string }

func TestSetGet(t *testing.T) {
	sys := newSystem(t)
	s := newSession(t, sys, session.NewMemConn(), session.Options{})

	user, lang := ctxKey{"user"}, ctxKey{"lang"}
	if v, ok := s.Get(user); ok || v != nil {
		t.Fatalf("Get before Set = %v, %v; want nil, false", v, ok)
	}
	s.Set(user, "alice")
	s.Set(lang, "en")
	s.Set(user, "bob")
	if v, ok := s.Get(user); !ok || v != "bob" {
		t.Fatalf("Get(user) = %v, %v; want bob, true", v, ok)
	}
	if v, ok := s.Get(lang); !ok || v != "en" {
		t.Fatalf("Get(lang) = %v, %v; want en, true", v, ok)
	}
	// Keys of another type with the same content are different keys.
	if _, ok := s.Get("user"); ok {
		t.Fatal(`Get("user") found a value stored under ctxKey{"user"}`)
	}

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			k := ctxKey{strconv.Itoa(g)}
			for i := range 100 {
				s.Set(k, i)
				if v, ok := s.Get(k); !ok || v != i {
					t.Errorf("goroutine %d: Get = %v, %v; want %d", g, v, ok, i)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestIdentity(t *testing.T) {
	sys := newSystem(t)
	s := newSession(t, sys, session.NewMemConn(), session.Options{})

	if id := s.Identity(); id != "" {
		t.Fatalf("Identity before SetIdentity = %q, want empty", id)
	}
	s.SetIdentity("user-42")
	if id := s.Identity(); id != "user-42" {
		t.Fatalf("Identity = %q, want user-42", id)
	}
	s.SetIdentity("user-43")
	if id := s.Identity(); id != "user-43" {
		t.Fatalf("Identity after second SetIdentity = %q, want user-43", id)
	}
}

func TestInfoAndSessionCount(t *testing.T) {
	sys := newSystem(t)
	hdr := http.Header{"Authorization": {"Bearer x"}}
	a := newSession(t, sys, session.NewMemConn(), session.Options{})
	b := sys.NewSession(session.NewMemConn(), session.Info{
		ID: "fixed-id", Header: hdr, RemoteAddr: "127.0.0.1:5555", Subprotocol: "ndjson",
	}, session.Options{})
	t.Cleanup(func() { session.Finish(b, session.CloseAbnormal, "") })
	c := newSession(t, sys, session.NewMemConn(), session.Options{})

	if b.ID() != "fixed-id" || b.RemoteAddr() != "127.0.0.1:5555" || b.Subprotocol() != "ndjson" ||
		b.Header().Get("Authorization") != "Bearer x" {
		t.Fatalf("Info not kept: id=%q remote=%q proto=%q header=%v", b.ID(), b.RemoteAddr(), b.Subprotocol(), b.Header())
	}
	if a.ID() == "" || c.ID() == "" || a.ID() == c.ID() {
		t.Fatalf("generated IDs %q and %q: want distinct, non-empty", a.ID(), c.ID())
	}
	if n := sys.Sessions(); n != 3 {
		t.Fatalf("Sessions() = %d, want 3", n)
	}
	session.Finish(b, session.CloseNormal, "")
	session.Finish(b, session.CloseNormal, "")
	if n := sys.Sessions(); n != 2 {
		t.Fatalf("Sessions() after finishing one twice = %d, want 2", n)
	}
}

var errEncode = errors.New("cannot encode")

// encodeEnvelope is a small envelope encoder of the shape Options.Encode
// expects; the typed package provides the real one.
func encodeEnvelope(typ string, payload any) ([]byte, error) {
	if payload == "fail" {
		return nil, errEncode
	}
	return json.Marshal(struct {
		Type    string `json:"type"`
		Payload any    `json:"payload"`
	}{typ, payload})
}

func TestSendUsesEncoder(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	s := newSession(t, sys, conn, session.Options{Encode: encodeEnvelope})

	if err := s.Send("greet", map[string]string{"name": "ada"}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := s.Send("broken", "fail"); !errors.Is(err, errEncode) {
		t.Fatalf("Send with failing encoder: got %v, want %v", err, errEncode)
	}
	if err := s.Send("after", 7); err != nil {
		t.Fatalf("Send after an encoder error: %v", err)
	}
	if n := conn.WaitCount(2, wait); n != 2 {
		t.Fatalf("%d frames written, want 2", n)
	}
	frames := conn.Frames()
	want := []string{`{"type":"greet","payload":{"name":"ada"}}`, `{"type":"after","payload":7}`}
	if got := texts(frames); !slices.Equal(got, want) {
		t.Fatalf("frames %q, want %q", got, want)
	}
	if frames[0].Binary {
		t.Fatal("envelope written as a binary frame")
	}
}

func TestSendWithoutEncoder(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	s := newSession(t, sys, conn, session.Options{})
	if err := s.Send("greet", 1); !errors.Is(err, session.ErrNoEncoder) {
		t.Fatalf("Send without Encode: got %v, want ErrNoEncoder", err)
	}
	if n := session.QueueLen(s); n != 0 {
		t.Fatalf("QueueLen = %d after a refused Send, want 0", n)
	}
}

func TestBinaryFramesKeepTheirKind(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	s := newSession(t, sys, conn, session.Options{})

	if err := s.SendBinary([]byte{0xff, 0x00}); err != nil {
		t.Fatal(err)
	}
	if err := s.SendText([]byte("t")); err != nil {
		t.Fatal(err)
	}
	if n := conn.WaitCount(2, wait); n != 2 {
		t.Fatalf("%d frames written, want 2", n)
	}
	f := conn.Frames()
	if !f[0].Binary || !bytes.Equal(f[0].Data, []byte{0xff, 0x00}) || f[1].Binary || string(f[1].Data) != "t" {
		t.Fatalf("frames %+v: want binary ff00 then text \"t\"", f)
	}
}

func TestEmitError(t *testing.T) {
	sys := newSystem(t)
	var got []error
	var from *session.Session
	s := newSession(t, sys, session.NewMemConn(), session.Options{
		OnError: func(s *session.Session, err error) { from = s; got = append(got, err) },
	})
	s.EmitError(nil)
	boom := errors.New("boom")
	s.EmitError(boom)
	if len(got) != 1 || got[0] != boom || from != s {
		t.Fatalf("OnError saw %v from %p, want [boom] from %p", got, from, s)
	}
}

func TestCloseReasonIsCutAtACharacterBoundary(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
	}{
		// 122 ASCII bytes, then a 3-byte character across the 123rd byte.
		{"straddling", strings.Repeat("r", 122) + "€€"},
		// 4-byte characters from the start: 123 is not a multiple of 4.
		{"emoji", strings.Repeat("🎉", 40)},
		{"two-byte", "x" + strings.Repeat("é", 80)},
		{"exact", strings.Repeat("r", 120) + "€"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := newSystem(t)
			conn := session.NewMemConn()
			h := newHooks()
			s := newSession(t, sys, conn, h.options(session.Options{}))

			s.CloseWith(4002, tc.reason)
			_, reason := waitClosed(t, conn)
			if len(reason) > 123 || !utf8.ValidString(reason) || !strings.HasPrefix(tc.reason, reason) {
				t.Fatalf("reason %q (%d bytes): want a valid UTF-8 prefix of at most 123 bytes", reason, len(reason))
			}
			// Cut no more than the character that did not fit.
			if len(reason) < 123-utf8.UTFMax+1 && len(tc.reason) > len(reason) {
				t.Fatalf("reason cut to %d bytes, want at least %d", len(reason), 123-utf8.UTFMax+1)
			}
			if len(tc.reason) <= 123 && reason != tc.reason {
				t.Fatalf("reason of %d bytes was cut to %q", len(tc.reason), reason)
			}
			session.Finish(s, session.CloseNoStatus, "")
			if ev := h.nextClose(t); ev.reason != reason {
				t.Fatalf("OnClose reason %q, want the reason sent, %q", ev.reason, reason)
			}
		})
	}
}

// Sends racing a graceful close are either refused or written before the
// close frame: nothing accepted is lost in silence.
func TestSendsRacingCloseAreWrittenOrRefused(t *testing.T) {
	const senders, perSender = 8, 400
	for round := range 10 {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			sys := newSystem(t)
			conn := session.NewMemConn()
			s := newSession(t, sys, conn, session.Options{MaxQueuedMessages: senders * perSender})

			accepted := make([]int, senders)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for g := range senders {
				wg.Go(func() {
					<-start
					for i := range perSender {
						if err := s.SendText([]byte(fmt.Sprintf("%d/%d", g, i))); err != nil {
							if !errors.Is(err, session.ErrClosed) {
								t.Errorf("sender %d: %v", g, err)
							}
							return
						}
						accepted[g]++
					}
				})
			}
			close(start)
			time.Sleep(time.Duration(round) * 100 * time.Microsecond)
			s.Close("done")
			wg.Wait()
			if code, _ := waitClosed(t, conn); code != session.CloseNormal {
				t.Fatalf("closed with %d, want %d", code, session.CloseNormal)
			}
			// MemConn refuses writes once closed: what it recorded was
			// written before the close frame.
			next := make([]int, senders)
			for _, m := range texts(conn.Frames()) {
				var g, i int
				if _, err := fmt.Sscanf(m, "%d/%d", &g, &i); err != nil || i != next[g] {
					t.Fatalf("frame %q out of order or unexpected (want %d/%d)", m, g, next[g])
				}
				next[g]++
			}
			if !slices.Equal(next, accepted) {
				t.Fatalf("frames written per sender %v, accepted %v", next, accepted)
			}
		})
	}
}

// A client that does not take a batch within WriteTimeout is reported to
// OnError and dropped; the deadline is the one handed to Conn.Write.
func TestWriteDeadlineDropsSession(t *testing.T) {
	sys := newSystem(t)
	conn := session.NewMemConn()
	h := newHooks()
	s := newSession(t, sys, conn, h.options(session.Options{WriteTimeout: 50 * time.Millisecond}))

	conn.Block()
	start := time.Now()
	if err := s.SendText([]byte("stuck")); err != nil {
		t.Fatal(err)
	}
	if err := h.nextError(t); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("OnError got %v, want an error wrapping %v", err, os.ErrDeadlineExceeded)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("write failed after %v, before its deadline", d)
	}
	if code, _ := waitClosed(t, conn); code != session.CloseAbnormal {
		t.Fatalf("conn closed with %d, want CloseNow (%d)", code, session.CloseAbnormal)
	}
	if s.IsOpen() {
		t.Fatal("session still open after a write timeout")
	}
	session.Finish(s, session.CloseAbnormal, "")
	if ev := h.nextClose(t); ev.code != session.CloseAbnormal || ev.reason != "write failed" {
		t.Fatalf("OnClose(%d, %q), want (%d, %q)", ev.code, ev.reason, session.CloseAbnormal, "write failed")
	}
}

// activeConn is a MemConn that knows whether a Write is running.
type activeConn struct {
	*session.MemConn
	active atomic.Int32
}

func (c *activeConn) Write(msgs []session.Frame, deadline time.Time) error {
	c.active.Add(1)
	defer c.active.Add(-1)
	return c.MemConn.Write(msgs, deadline)
}

// Finish runs the end hooks and OnClose only once a write in flight has
// returned (cutting the connection makes it return), and no write starts
// after it.
func TestFinishWaitsForTheWriteInFlight(t *testing.T) {
	for round := range 20 {
		sys := newSystem(t)
		conn := &activeConn{MemConn: session.NewMemConn()}
		var activeAtEnd, activeAtClose atomic.Int32
		remove := sys.OnSessionEnd(func(*session.Session) { activeAtEnd.Store(conn.active.Load()) })
		s := sys.NewSession(conn, session.Info{}, session.Options{
			OnClose: func(*session.Session, int, string) { activeAtClose.Store(conn.active.Load()) },
		})
		if round%2 == 0 {
			conn.Block()
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 100 {
				if s.SendText([]byte(strconv.Itoa(i))) != nil {
					return
				}
			}
		})
		if round%2 == 0 {
			barrier(t, sys, s)
		}
		session.Finish(s, session.CloseAbnormal, "gone")
		batches := conn.Batches()
		if a, c := activeAtEnd.Load(), activeAtClose.Load(); a != 0 || c != 0 {
			t.Fatalf("round %d: %d writes running during the end hooks, %d during OnClose", round, a, c)
		}
		wg.Wait()
		time.Sleep(10 * time.Millisecond)
		if n, b := conn.active.Load(), conn.Batches(); n != 0 || b != batches {
			t.Fatalf("round %d: a write started after Finish", round)
		}
		remove()
	}
}

// Sessions spawned at once from many goroutines each get their own actor:
// no frame reaches another session's connection.
func TestConcurrentSpawnsKeepSessionsApart(t *testing.T) {
	const goroutines, each = 8, 50
	sys := newSystem(t)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				conn := session.NewMemConn()
				id := fmt.Sprintf("s%d-%d", g, i)
				s := sys.NewSession(conn, session.Info{ID: id}, session.Options{})
				if err := s.SendText([]byte(id)); err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				s.Close("bye")
				conn.WaitCount(math.MaxInt, wait)
				if got := texts(conn.Frames()); len(got) != 1 || got[0] != id {
					t.Errorf("%s: connection got %q", id, got)
				}
				session.Finish(s, session.CloseNormal, "")
			}
		})
	}
	wg.Wait()
	if n := sys.Sessions(); n != 0 {
		t.Fatalf("%d sessions alive after all finished", n)
	}
}
