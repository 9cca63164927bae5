package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/client"
	"github.com/troupehq/troupe/troupetest"
)

// wait bounds every wait of these tests.
const wait = 5 * time.Second

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// serve starts a room-protocol server on 127.0.0.1.
func serve(t *testing.T, cfg troupe.Config) (*troupe.Server, string) {
	t.Helper()
	cfg.RoomProtocol = true
	srv, err := troupe.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, troupetest.NewServer(t, srv).URL
}

// statuses records a client's status changes.
type statuses struct {
	mu   sync.Mutex
	all  []client.Status
	more chan struct{}
}

func newStatuses() *statuses { return &statuses{more: make(chan struct{}, 1)} }

func (s *statuses) add(st client.Status) {
	s.mu.Lock()
	s.all = append(s.all, st)
	s.mu.Unlock()
	select {
	case s.more <- struct{}{}:
	default:
	}
}

// waitFor waits for a status (from the n-th on) that ok accepts and
// returns it.
func (s *statuses) waitFor(t *testing.T, from int, what string, ok func(client.Status) bool) client.Status {
	t.Helper()
	deadline := time.After(wait)
	for {
		s.mu.Lock()
		for i := from; i < len(s.all); i++ {
			if st := s.all[i]; ok(st) {
				s.mu.Unlock()
				return st
			}
		}
		s.mu.Unlock()
		select {
		case <-s.more:
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("no status: %s (got %+v)", what, s.all)
		}
	}
}

func dial(t *testing.T, urls []string, opts *client.Options) *client.Client {
	t.Helper()
	if opts == nil {
		opts = &client.Options{}
	}
	if opts.MinDelay == 0 {
		opts.MinDelay, opts.MaxDelay = 5*time.Millisecond, 50*time.Millisecond
	}
	c, err := client.Dial(ctxT(t), urls, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// inbox collects a room's messages and recoveries.
type inbox struct {
	mu       sync.Mutex
	msgs     []client.Message
	recovers []client.Recover
	more     chan struct{}
}

func watch(r *client.Room) *inbox {
	in := &inbox{more: make(chan struct{}, 1)}
	poke := func() {
		select {
		case in.more <- struct{}{}:
		default:
		}
	}
	r.OnMessage(func(m client.Message) {
		in.mu.Lock()
		in.msgs = append(in.msgs, m)
		in.mu.Unlock()
		poke()
	})
	r.OnRecover(func(rc client.Recover) {
		in.mu.Lock()
		in.recovers = append(in.recovers, rc)
		in.mu.Unlock()
		poke()
	})
	return in
}

func (in *inbox) until(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.After(wait)
	for {
		in.mu.Lock()
		done := ok()
		in.mu.Unlock()
		if done {
			return
		}
		select {
		case <-in.more:
		case <-deadline:
			in.mu.Lock()
			defer in.mu.Unlock()
			t.Fatalf("timed out waiting for %s: seqs %v, recovers %+v", what, in.seqs(), in.recovers)
		}
	}
}

// waitSeq waits until the message numbered n has arrived.
func (in *inbox) waitSeq(t *testing.T, n uint64) {
	t.Helper()
	in.until(t, "seq "+itoa(n), func() bool { return len(in.msgs) > 0 && in.msgs[len(in.msgs)-1].Seq >= n })
}

func (in *inbox) seqs() []uint64 {
	var s []uint64
	for _, m := range in.msgs {
		s = append(s, m.Seq)
	}
	return s
}

func (in *inbox) bodies() []int {
	var b []int
	for _, m := range in.msgs {
		var n int
		_ = json.Unmarshal(m.Body, &n)
		b = append(b, n)
	}
	return b
}

func (in *inbox) check(t *testing.T, to uint64) {
	t.Helper()
	in.mu.Lock()
	defer in.mu.Unlock()
	want := seqRange(1, to)
	if got := in.seqs(); !slices.Equal(got, want) {
		t.Fatalf("seqs %v, want %v: each message once, in order", got, want)
	}
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
