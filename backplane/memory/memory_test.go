package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/rooms"
)

func build(seq uint64) []byte { return fmt.Appendf(nil, `{"seq":%d}`, seq) }

// one builds a batch of one message.
func one(first uint64) [][]byte { return [][]byte{build(first)} }

// collect gathers what a feed delivers.
type collect struct {
	mu   sync.Mutex
	seqs []uint64
	more chan struct{}
}

func newCollect() *collect { return &collect{more: make(chan struct{}, 1)} }

func (c *collect) deliver(e rooms.Entry) {
	c.mu.Lock()
	c.seqs = append(c.seqs, e.Seq)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

func (c *collect) waitLen(t *testing.T, n int) []uint64 {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		got := slices.Clone(c.seqs)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("delivered %v, want %d entries", got, n)
		}
	}
}

func seqs(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// TestPublishFollow checks one gap-free sequence across nodes publishing
// at once, the same order on every feed, and a backlog bounded to the
// history length.
func TestPublishFollow(t *testing.T) {
	c := NewCluster(50)
	a, b := c.Node("a"), c.Node("b")
	ctx := context.Background()
	fa, fb := newCollect(), newCollect()
	feedA, err := a.Follow(ctx, "r", fa.deliver)
	if err != nil || len(feedA.Backlog) != 0 {
		t.Fatalf("Follow: %v, backlog %v", err, feedA.Backlog)
	}
	defer feedA.Stop()
	feedB, _ := b.Follow(ctx, "r", fb.deliver)
	defer feedB.Stop()

	var wg sync.WaitGroup
	got := make(chan uint64, 200)
	for _, n := range []rooms.Backplane{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				seq, err := n.Publish(ctx, "r", 1, one)
				if err != nil {
					t.Error(err)
					return
				}
				got <- seq
			}
		}()
	}
	wg.Wait()
	close(got)
	var acked []uint64
	for s := range got {
		acked = append(acked, s)
	}
	slices.Sort(acked)
	if !slices.Equal(acked, seqs(1, 200)) {
		t.Fatalf("Publish returned %v, want 1..200 once each", acked)
	}
	if da, db := fa.waitLen(t, 200), fb.waitLen(t, 200); !slices.Equal(da, seqs(1, 200)) || !slices.Equal(db, da) {
		t.Fatalf("feeds saw %v and %v, want 1..200 in order on both", da, db)
	}

	late, _ := a.Follow(ctx, "r", func(rooms.Entry) {})
	defer late.Stop()
	var bl []uint64
	for _, e := range late.Backlog {
		bl = append(bl, e.Seq)
		if string(e.Payload) != string(build(e.Seq)) {
			t.Fatalf("backlog entry %d has payload %s", e.Seq, e.Payload)
		}
	}
	if !slices.Equal(bl, seqs(151, 200)) {
		t.Fatalf("backlog %v, want the newest 50: 151..200", bl)
	}
}

// TestPresence checks that a node sees the others' lists, not its own,
// including lists announced before it watched, and that a node's Close
// removes its members.
func TestPresence(t *testing.T) {
	c := NewCluster(0)
	a, b := c.Node("a"), c.Node("b")
	type update struct {
		node string
		keys []string
	}
	seen := make(chan update, 10)
	watch := func(node string, list []rooms.PresenceEntry) {
		var keys []string
		for _, e := range list {
			keys = append(keys, e.Key)
		}
		seen <- update{node, keys}
	}
	next := func() update {
		select {
		case u := <-seen:
			return u
		case <-time.After(5 * time.Second):
			t.Fatal("no presence update")
			return update{}
		}
	}
	_ = a.Announce("r", []rooms.PresenceEntry{{Key: "s1", Entry: []byte(`{"id":"x"}`)}})
	stop, err := b.WatchPresence("r", watch)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if u := next(); u.node != "a" || !slices.Equal(u.keys, []string{"s1"}) {
		t.Fatalf("late watcher got %+v, want a's [s1]", u)
	}
	stopA, _ := a.WatchPresence("r", watch)
	defer stopA()
	_ = a.Announce("r", []rooms.PresenceEntry{{Key: "s1"}, {Key: "s2"}})
	if u := next(); u.node != "a" || !slices.Equal(u.keys, []string{"s1", "s2"}) {
		t.Fatalf("got %+v, want a's [s1 s2] (and never a's own list passed to a)", u)
	}
	_ = c.Close("a")
	if u := next(); u.node != "a" || u.keys != nil {
		t.Fatalf("after a's Close got %+v, want a's list gone", u)
	}
	if _, err := a.Publish(context.Background(), "r", 1, one); err != ErrClosed {
		t.Fatalf("Publish on a closed node: %v, want ErrClosed", err)
	}
}

// TestSignals checks that a signal reaches the other nodes' watches of its
// room, in order, not the sender's own, and not after stop.
func TestSignals(t *testing.T) {
	c := NewCluster(0)
	a, b := c.Node("a"), c.Node("b")
	got := make(chan string, 8)
	stopB, _ := b.WatchSignals("r", func(d []byte) { got <- "b:" + string(d) })
	stopA, _ := a.WatchSignals("r", func(d []byte) { got <- "a:" + string(d) })
	defer stopA()
	_ = a.Signal("r", []byte("1"))
	_ = a.Signal("r", []byte("2"))
	for _, want := range []string{"b:1", "b:2"} {
		select {
		case s := <-got:
			if s != want {
				t.Fatalf("got %q, want %q", s, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %q", want)
		}
	}
	stopB()
	_ = a.Signal("r", []byte("3"))
	_ = b.Signal("r", []byte("4"))
	select {
	case s := <-got:
		if s != "a:4" {
			t.Fatalf("got %q, want only a:4 (b stopped watching, a never gets its own)", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a did not get b's signal")
	}
}

// TestNodeByName checks that a name gives the same node every time, that
// Close and LoseDeliveries act on the node of that name only, and that a
// closed node stays closed.
func TestNodeByName(t *testing.T) {
	c := NewCluster(0)
	ctx := context.Background()
	if c.Node("a") != c.Node("a") || c.Node("a") == c.Node("b") {
		t.Fatal("Node does not give one node per name")
	}
	fa, fb := newCollect(), newCollect()
	feedA, _ := c.Node("a").Follow(ctx, "r", fa.deliver)
	defer feedA.Stop()
	feedB, _ := c.Node("b").Follow(ctx, "r", fb.deliver)
	defer feedB.Stop()
	c.LoseDeliveries("a", 1)
	for range 2 {
		if _, err := c.Node("b").Publish(ctx, "r", 1, one); err != nil {
			t.Fatal(err)
		}
	}
	if got := fb.waitLen(t, 2); !slices.Equal(got, seqs(1, 2)) {
		t.Fatalf("b's feed saw %v, want 1..2", got)
	}
	if got := fa.waitLen(t, 1); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("a's feed saw %v, want only 2 (it was to lose one delivery)", got)
	}

	if err := c.Close("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Node("a").Publish(ctx, "r", 1, one); err != ErrClosed {
		t.Fatalf("Publish on the node of a closed name: %v, want ErrClosed", err)
	}
	if _, err := c.Node("b").Publish(ctx, "r", 1, one); err != nil {
		t.Fatalf("Publish on b after a's Close: %v", err)
	}
}

// TestPublishGivenUp checks that a build returning nil appends nothing:
// Publish fails, and the next message takes the number it was offered.
func TestPublishGivenUp(t *testing.T) {
	c := NewCluster(10)
	a := c.Node("a")
	ctx := context.Background()
	if _, err := a.Publish(ctx, "r", 1, one); err != nil {
		t.Fatal(err)
	}
	if seq, err := a.Publish(ctx, "r", 2, func(uint64) [][]byte { return nil }); err == nil {
		t.Fatalf("a publish given up returned seq %d and no error", seq)
	}
	if seq, err := a.Publish(ctx, "r", 1, one); err != nil || seq != 2 {
		t.Fatalf("the next publish: seq %d, %v; want 2", seq, err)
	}
	f, _ := a.Follow(ctx, "r", func(rooms.Entry) {})
	defer f.Stop()
	if len(f.Backlog) != 2 {
		t.Fatalf("the log holds %d messages, want 2", len(f.Backlog))
	}
}
