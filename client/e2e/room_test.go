package e2e

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/backplane/memory"
	"github.com/troupehq/troupe/client"
)

func TestRoomJoinPublishHistoryPresenceLeave(t *testing.T) {
	_, url := serve(t, troupe.Config{})
	ctx := ctxT(t)
	ann := dial(t, []string{url}, nil).Room("lobby")
	bobC := dial(t, []string{url}, nil)
	bob := bobC.Room("lobby")
	got := watch(ann)
	presence := make(chan client.Presence, 8)
	ann.OnPresence(func(p client.Presence) { presence <- p })

	if _, err := bob.Publish(ctx, 0); !isCode(err, "not_member") {
		t.Fatalf("publish before joining: %v, want not_member", err)
	}
	if j, err := ann.Join(ctx, map[string]string{"name": "ann"}); err != nil || j.Seq != 0 || len(j.Members) != 1 {
		t.Fatalf("ann joins: %+v, %v", j, err)
	}
	if p := <-presence; !p.Reset || len(p.Members) != 1 {
		t.Fatalf("presence after the join: %+v", p)
	}
	if _, err := bob.Join(ctx, map[string]string{"name": "bob"}); err != nil {
		t.Fatal(err)
	}
	if p := <-presence; len(p.Joins) != 1 || string(p.Joins[0].Meta) != `{"name":"bob"}` || len(p.Members) != 2 {
		t.Fatalf("presence when bob joins: %+v", p)
	}
	for i := 1; i <= 5; i++ {
		seq, err := bob.Publish(ctx, i)
		if err != nil || seq != uint64(i) {
			t.Fatalf("publish %d: seq %d, %v", i, seq, err)
		}
	}
	got.waitSeq(t, 5)
	got.check(t, 5)
	if !slices.Equal(got.bodies(), []int{1, 2, 3, 4, 5}) {
		t.Fatalf("bodies %v", got.bodies())
	}
	h, err := ann.History(ctx, 5, 2)
	if err != nil || len(h) != 2 || h[0].Seq != 3 || h[1].Seq != 4 {
		t.Fatalf("history before 5, limit 2: %+v, %v", h, err)
	}
	if err := bob.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if p := <-presence; len(p.Leaves) != 1 || len(p.Members) != 1 {
		t.Fatalf("presence when bob leaves: %+v", p)
	}
	if _, err := bob.Publish(ctx, 6); !isCode(err, "not_member") {
		t.Fatalf("publish after leaving: %v, want not_member", err)
	}
}

func isCode(err error, code string) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Code == code
}

// The server drops ann's connection (a proxy cut) and holds her
// reconnects while bob publishes: she rejoins with since, gets exactly
// what she missed, and is told she recovered everything.
func TestRoomResumesAfterTheConnectionDrops(t *testing.T) {
	_, url := serve(t, troupe.Config{})
	ctx := ctxT(t)
	p := startProxy(t, url)
	st := newStatuses()
	annC := dial(t, []string{p.URL}, &client.Options{OnStatus: st.add})
	ann := annC.Room("resume")
	bob := dial(t, []string{url}, nil).Room("resume")
	got := watch(ann)
	if _, err := ann.Join(ctx, map[string]string{"name": "ann"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Join(ctx, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, bob, 1, 5)
	got.waitSeq(t, 5)

	p.hold()
	p.cut()
	st.waitFor(t, 0, "disconnected", func(s client.Status) bool { return s.State == client.Disconnected })
	publish(t, bob, 6, 15)
	got.mu.Lock()
	if n := len(got.msgs); n != 5 {
		t.Fatalf("%d messages while cut off, want 5", n)
	}
	got.mu.Unlock()
	p.release()

	got.until(t, "the recovery", func() bool { return len(got.recovers) > 0 })
	got.mu.Lock()
	if r := got.recovers[0]; r != (client.Recover{Recovered: true, Since: 5, Seq: 15}) {
		t.Fatalf("recover %+v", r)
	}
	if n := len(got.msgs); n != 15 {
		t.Fatalf("%d messages when the recovery was reported, want 15", n)
	}
	got.mu.Unlock()
	st.waitFor(t, 0, "reconnected", func(s client.Status) bool { return s.State == client.Connected && s.Reconnected })

	// Live messages follow, from both sides.
	publish(t, bob, 16, 16)
	if seq, err := ann.Publish(ctx, 17); err != nil || seq != 17 {
		t.Fatalf("ann publishes after the resume: %d, %v", seq, err)
	}
	got.waitSeq(t, 17)
	got.check(t, 17)
	if len(got.recovers) != 1 {
		t.Fatalf("recovers %+v", got.recovers)
	}
}

func publish(t *testing.T, r *client.Room, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := r.Publish(ctxT(t), i); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// Two nodes share their rooms through the memory backplane. Ann is on
// node A; A goes away (Server.Close drops its connections); her client
// moves on to node B, and the room resumes there with recovered: true and
// nothing missed or repeated.
func TestFailoverToAnotherNode(t *testing.T) {
	cluster := memory.NewCluster(1000)
	srvA, urlA := serve(t, troupe.Config{Backplane: cluster.Node("a")})
	_, urlB := serve(t, troupe.Config{Backplane: cluster.Node("b")})
	ctx := ctxT(t)
	// Ann reaches B through a proxy, so that the test can hold her there
	// until bob has published what she must recover.
	pb := startProxy(t, urlB)
	st := newStatuses()
	annC := dial(t, []string{urlA, pb.URL}, &client.Options{OnStatus: st.add})
	ann := annC.Room("failover")
	bob := dial(t, []string{urlB}, nil).Room("failover")
	got := watch(ann)
	if _, err := ann.Join(ctx, map[string]string{"name": "ann"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Join(ctx, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, bob, 1, 3)
	got.waitSeq(t, 3)
	if s := st.waitFor(t, 0, "connected to A", func(s client.Status) bool { return s.State == client.Connected }); s.URL != urlA {
		t.Fatalf("first connection to %s, want A %s", s.URL, urlA)
	}

	pb.hold()
	if err := srvA.Close(); err != nil {
		t.Fatal(err)
	}
	st.waitFor(t, 0, "A lost", func(s client.Status) bool { return s.State == client.Disconnected && s.URL == urlA })
	publish(t, bob, 4, 8)
	pb.release()

	s := st.waitFor(t, 0, "connected to B", func(s client.Status) bool { return s.State == client.Connected && s.Reconnected })
	if s.URL != pb.URL {
		t.Fatalf("reconnected to %s, want B %s", s.URL, pb.URL)
	}
	got.until(t, "the recovery", func() bool { return len(got.recovers) > 0 })
	got.mu.Lock()
	if r := got.recovers[0]; !r.Recovered || r.Since != 3 || r.Seq < 8 {
		t.Fatalf("recover %+v, want recovered since 3 up to 8", r)
	}
	got.mu.Unlock()
	publish(t, bob, 9, 9)
	got.waitSeq(t, 9)
	got.check(t, 9)
	if !slices.Equal(got.bodies(), []int{1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("bodies %v", got.bodies())
	}
}

// Close leaves nothing running, also with a connection that is down and a
// join and a request that wait (goleak checks at the end of the package).
func TestCloseWhileWaiting(t *testing.T) {
	_, url := serve(t, troupe.Config{})
	p := startProxy(t, url)
	st := newStatuses()
	c := dial(t, []string{p.URL}, &client.Options{OnStatus: st.add})
	p.hold()
	p.cut()
	st.waitFor(t, 0, "disconnected", func(s client.Status) bool { return s.State == client.Disconnected })
	errs := make(chan error, 2)
	go func() {
		_, err := c.Room("x").Join(context.Background(), nil)
		errs <- err
	}()
	go func() {
		_, err := client.Request[int](context.Background(), c, "anything", nil)
		errs <- err
	}()
	time.Sleep(50 * time.Millisecond) // let both wait (if not, they fail the same way)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, client.ErrClosed) {
			t.Fatalf("after Close: %v, want ErrClosed", err)
		}
	}
	st.waitFor(t, 0, "closed", func(s client.Status) bool { return s.State == client.Closed })
	if err := c.Send(context.Background(), "x", nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}
