package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tclient "github.com/troupehq/troupe/client"
)

// TestKillLeaderPublishOnce: a client on the node that leads the rooms'
// stream sends 100 publishes at once; that node is killed with SIGKILL in
// the middle of the burst (some publishes acknowledged, some taken by it
// and not acknowledged, some not yet taken). The client resends what was
// not acknowledged through another node. Every member ends holding each of
// the 100 texts exactly once, in one order, and each Publish returned once
// with the seq the members saw.
func TestKillLeaderPublishOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cluster test: not under -short")
	}
	const (
		room   = "once"
		n      = 100
		killAt = 30 // acknowledgements before the kill
	)
	nodes, _ := startChatCluster(t)
	leaderName := streamLeader(t, nodes[0])
	leader := slices.IndexFunc(nodes, func(c *chatNode) bool { return c.name == leaderName })
	if leader < 0 {
		t.Fatalf("stream leader %q is none of the nodes", leaderName)
	}
	urlsFrom := func(name string, first int) []string {
		var us []string
		for i := range nodes {
			us = append(us, "ws://"+nodes[(first+i)%len(nodes)].addr+"/ws?name="+url.QueryEscape(name))
		}
		return us
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterWait)
	defer cancel()
	dial := func(name string, first int) *tclient.Client {
		c, err := tclient.Dial(ctx, urlsFrom(name, first), &tclient.Options{MinDelay: 50 * time.Millisecond, MaxDelay: time.Second})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	type inbox struct {
		mu   sync.Mutex
		msgs []tclient.Message
	}
	var watchers []*inbox
	watch := func(r *tclient.Room) {
		in := &inbox{}
		r.OnMessage(func(m tclient.Message) {
			in.mu.Lock()
			in.msgs = append(in.msgs, m)
			in.mu.Unlock()
		})
		watchers = append(watchers, in)
	}
	pub := dial("publisher", leader).Room(room)
	watch(pub)
	var others []*tclient.Room
	for i := 1; i < len(nodes); i++ {
		r := dial(fmt.Sprintf("w%d", i), (leader+i)%len(nodes)).Room(room)
		watch(r)
		others = append(others, r)
	}
	for _, r := range append([]*tclient.Room{pub}, others...) {
		if _, err := r.Join(ctx, nil); err != nil {
			t.Fatalf("join: %v", err)
		}
	}

	seqs := make([]uint64, n)
	var returns [n]atomic.Int32
	var acked atomic.Int32
	kill := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			seq, err := pub.Publish(ctx, map[string]string{"text": fmt.Sprintf("once-%03d", i)})
			returns[i].Add(1)
			if err != nil {
				errs <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			seqs[i] = seq
			if acked.Add(1) == killAt {
				close(kill)
			}
		})
	}
	select {
	case <-kill:
	case <-ctx.Done():
		t.Fatalf("%d publishes acknowledged before the deadline", acked.Load())
	}
	nodes[leader].kill()
	t.Logf("killed %s (SIGKILL), the stream leader and the publisher's node, after %d acknowledgements", leaderName, killAt)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A last message, after which nothing of the burst can arrive.
	last, err := others[0].Publish(ctx, map[string]string{"text": "end"})
	if err != nil {
		t.Fatalf("the last publish: %v", err)
	}
	text := func(m tclient.Message) string {
		var b struct {
			Text string `json:"text"`
		}
		_ = json.Unmarshal(m.Body, &b)
		return b.Text
	}
	var ref []string
	for k, in := range watchers {
		deadline := time.Now().Add(clusterWait)
		for {
			in.mu.Lock()
			got := len(in.msgs) > 0 && in.msgs[len(in.msgs)-1].Seq >= last
			in.mu.Unlock()
			if got {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("member %d never received seq %d", k, last)
			}
			time.Sleep(20 * time.Millisecond)
		}
		in.mu.Lock()
		msgs := slices.Clone(in.msgs)
		in.mu.Unlock()
		var texts []string
		for i, m := range msgs {
			if m.Seq != uint64(i+1) {
				t.Fatalf("member %d: seq %d at position %d: want 1..%d once each", k, m.Seq, i, last)
			}
			texts = append(texts, text(m))
		}
		if uint64(len(msgs)) != last || texts[len(texts)-1] != "end" {
			t.Fatalf("member %d holds %d messages, want %d ending with the last", k, len(msgs), last)
		}
		texts = texts[:len(texts)-1]
		if ref == nil {
			ref = texts
		} else if !slices.Equal(texts, ref) {
			t.Fatalf("member %d holds another order:\n%v\n%v", k, texts, ref)
		}
	}
	if len(ref) != n {
		t.Fatalf("the room holds %d messages of the burst, want %d, each once: %v", len(ref), n, ref)
	}
	for i := range n {
		want := fmt.Sprintf("once-%03d", i)
		if c := returns[i].Load(); c != 1 {
			t.Fatalf("publish %d returned %d times", i, c)
		}
		if at := slices.Index(ref, want); at < 0 || seqs[i] != uint64(at+1) {
			t.Fatalf("publish of %s returned seq %d; the members hold it at %d", want, seqs[i], at+1)
		}
	}
}
