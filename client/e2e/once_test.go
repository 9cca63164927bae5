package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/client"
)

// TestOutboxAfterServerDrop: the server drops ann's connection in the
// middle of 100 publishes she sent at once (the first ones acknowledged,
// the one being handled published but not acknowledged, the rest not
// handled). After her reconnect every member holds each of the 100 bodies
// exactly once, in one order, and each Publish returned once, with the seq
// the members saw.
func TestOutboxAfterServerDrop(t *testing.T) {
	const (
		room = "once"
		n    = 100
	)
	var (
		first   sync.Once
		annSID  string
		handled atomic.Int32 // room.publish of the room seen by the server
		dropped atomic.Bool
	)
	_, url := serve(t, troupe.Config{
		CheckPublish: func(s *troupe.Session, _ string, _ json.RawMessage) error {
			first.Do(func() { annSID = s.ID() })
			if handled.Add(1) == n/2 && s.ID() == annSID {
				// Answers from here on are refused: this one is published
				// and never acknowledged, the later ones are dropped.
				_ = s.CloseWith(1012, "restart")
				dropped.Store(true)
			}
			return nil
		},
	})
	ctx := ctxT(t)
	st := newStatuses()
	ann := dial(t, []string{url}, &client.Options{OnStatus: st.add}).Room(room)
	bob := dial(t, []string{url}, nil).Room(room)
	annGot, bobGot := watch(ann), watch(bob)
	for _, r := range []*client.Room{ann, bob} {
		if _, err := r.Join(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}

	seqs := make([]uint64, n)
	var returns [n]atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			seq, err := ann.Publish(ctx, i)
			returns[i].Add(1)
			if err != nil {
				errs <- err
				return
			}
			seqs[i] = seq
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish: %v", err)
	}
	if !dropped.Load() {
		t.Fatal("the server never dropped the publisher")
	}
	st.waitFor(t, 0, "reconnected", func(s client.Status) bool { return s.State == client.Connected && s.Reconnected })
	if h := handled.Load(); h <= n {
		t.Fatalf("the server saw %d publishes: nothing was sent again", h)
	}

	for _, in := range []*inbox{annGot, bobGot} {
		in.waitSeq(t, n)
	}
	bobGot.check(t, n)
	annGot.check(t, n)
	bodies := bobGot.bodies()
	if !slices.Equal(annGot.bodies(), bodies) {
		t.Fatalf("ann and bob hold different orders:\n%v\n%v", annGot.bodies(), bodies)
	}
	sorted := slices.Sorted(slices.Values(bodies))
	for i, b := range sorted {
		if b != i {
			t.Fatalf("bodies %v: want each of 0..%d once", bodies, n-1)
		}
	}
	for i := range n {
		if r := returns[i].Load(); r != 1 {
			t.Fatalf("publish %d returned %d times", i, r)
		}
		if want := uint64(slices.Index(bodies, i) + 1); seqs[i] != want {
			t.Fatalf("publish of %d returned seq %d; the members saw it as %d", i, seqs[i], want)
		}
	}
}

// TestOutboxFull: beyond MaxOutbox publishes waiting for their
// acknowledgement, Publish fails at once with ErrOutboxFull; they go out
// once a connection is back. (The application waits and tries again.)
func TestOutboxFull(t *testing.T) {
	_, url := serve(t, troupe.Config{})
	ctx := ctxT(t)
	p := startProxy(t, url)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the client's close (cleanups run last first)
	c := dial(t, []string{p.URL}, &client.Options{MaxOutbox: 2})
	r := c.Room("full")
	if _, err := r.Join(ctx, nil); err != nil {
		t.Fatal(err)
	}
	p.hold()
	p.cut()
	done := make(chan uint64, 2)
	for i := range 2 {
		wg.Go(func() {
			for {
				seq, err := r.Publish(ctx, i)
				if errors.Is(err, client.ErrOutboxFull) {
					time.Sleep(time.Millisecond) // the probe below holds a place
					continue
				}
				if err != nil {
					t.Errorf("publish %d: %v", i, err)
				}
				done <- seq
				return
			}
		})
	}
	// Once both wait in the outbox, a third is refused. (A third that
	// went in before them gives up when its short context ends, unsent.)
	for {
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, err := r.Publish(short, 2)
		cancel()
		if errors.Is(err, client.ErrOutboxFull) {
			break
		}
		if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			t.Fatalf("third publish: %v, want ErrOutboxFull", err)
		}
		// The probe held a place for its 20 ms: leave the two publishes
		// (which retry every millisecond) time to take the places, or a
		// busy machine can have the next probe take it first every time.
		time.Sleep(10 * time.Millisecond)
	}
	p.release()
	wg.Wait()
	close(done)
	var got []uint64
	for s := range done {
		got = append(got, s)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("the two publishes returned %v, want seqs 1 and 2", got)
	}
}
