package nats

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/troupehq/troupe/rooms"
)

// openCluster starts three nodes, each with its own embedded server, routed
// to each other on 127.0.0.1, with file storage and Replicas 3.
func openCluster(t testing.TB) []*Backplane {
	t.Helper()
	ports := freePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	nodes := make([]*Backplane, 3)
	errs := make([]error, 3)
	// Three servers electing a meta leader under -race on a busy two-core
	// machine can take longer than one wait; this bounds a stuck start.
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	defer cancel()
	var wg sync.WaitGroup
	for i := range nodes {
		opts := Options{
			Embedded: &ServerOptions{
				Name:        fmt.Sprintf("s%d", i+1),
				Port:        -1, // routing needs a client listener
				ClusterPort: ports[i],
				Routes:      routes,
				StoreDir:    t.TempDir(),
			},
			Replicas:      3,
			FeedHeartbeat: 500 * time.Millisecond, // the feeds on the leader's server move sooner
			Logger:        testLogger(),
		}
		// All three must be starting for any to find its JetStream ready.
		wg.Go(func() { nodes[i], errs[i] = Open(ctx, opts) })
	}
	wg.Wait()
	for i, n := range nodes {
		if n != nil {
			t.Cleanup(func() { n.Close() })
		}
		if errs[i] != nil {
			t.Fatalf("Open node %d: %v", i+1, errs[i])
		}
	}
	return nodes
}

func streamLeader(t testing.TB, nodes []*Backplane) int {
	t.Helper()
	for i, n := range nodes {
		if n.Server().JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, n.cfg.Stream) {
			return i
		}
	}
	t.Fatal("no node leads the stream")
	return -1
}

// publishFromAll publishes perNode messages through each node at once and
// returns the sequence numbers they got, sorted.
func publishFromAll(t testing.TB, nodes []*Backplane, room string, perNode int) []uint64 {
	t.Helper()
	var mu sync.Mutex
	var seqs []uint64
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			for i := range perNode {
				seq, err := n.Publish(ctxT(t), room, 1, single(func(seq uint64) []byte {
					return fmt.Appendf(nil, "%s/%d@%d", n.Node(), i, seq)
				}))
				if err != nil {
					t.Errorf("Publish via %s: %v", n.Node(), err)
					return
				}
				mu.Lock()
				seqs = append(seqs, seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(seqs)
	return seqs
}

func checkRun(t testing.TB, seqs []uint64, from, n uint64) {
	t.Helper()
	if uint64(len(seqs)) != n {
		t.Fatalf("got %d seqs, want %d", len(seqs), n)
	}
	for i, s := range seqs {
		if s != from+uint64(i) {
			t.Fatalf("seqs are not %d..%d: %v", from, from+n-1, seqs)
		}
	}
}

func sameEntries(t testing.TB, a, b []rooms.Entry) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("feeds differ in length: %d vs %d", len(a), len(b))
	}
	for i := range a {
		if a[i].Seq != b[i].Seq || !bytes.Equal(a[i].Payload, b[i].Payload) {
			t.Fatalf("feeds differ at %d: %d %q vs %d %q", i, a[i].Seq, a[i].Payload, b[i].Seq, b[i].Payload)
		}
	}
}

func TestClusterOneSequenceSurvivesLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-server cluster")
	}
	nodes := openCluster(t)
	for _, n := range nodes {
		if n.Replicas() != 3 {
			t.Fatalf("node %s opened the stream with %d replicas", n.Node(), n.Replicas())
		}
	}
	feeds := make([]*collector, 3)
	for i, n := range nodes {
		_, feeds[i] = follow(t, n, "lobby")
	}

	const perNode = 40
	checkRun(t, publishFromAll(t, nodes, "lobby", perNode), 1, 3*perNode)
	first := feeds[0].waitFor(t, 3*perNode)
	checkSeqs(t, first, 1)
	for _, f := range feeds[1:] {
		sameEntries(t, first, f.waitFor(t, 3*perNode))
	}

	// The stream leader's node leaves; the other two elect a new leader and
	// the numbering goes on where it was.
	leader := streamLeader(t, nodes)
	if err := nodes[leader].Close(); err != nil {
		t.Fatal(err)
	}
	rest := slices.Delete(slices.Clone(nodes), leader, leader+1)
	restFeeds := slices.Delete(slices.Clone(feeds), leader, leader+1)
	checkRun(t, publishFromAll(t, rest, "lobby", perNode), 3*perNode+1, 2*perNode)

	// A publish whose acknowledgement is lost is stored once here too (a
	// cluster recognises the resent message ID).
	loseAck(rest[0])
	if seq, err := rest[0].Publish(ctxT(t), "lobby", 1, single(payload)); err != nil || seq != 5*perNode+1 {
		t.Fatalf("publish after a lost ack: seq %d, err %v; want %d", seq, err, 5*perNode+1)
	}
	const total = 5*perNode + 1
	all := restFeeds[0].waitFor(t, total)
	checkSeqs(t, all, 1)
	if len(all) != total {
		t.Fatalf("feed has %d entries, want %d", len(all), total)
	}
	sameEntries(t, all, restFeeds[1].waitFor(t, total))

	// A node that follows the room now gets the whole log as backlog.
	feed, _ := follow(t, rest[1], "lobby")
	sameEntries(t, all, feed.Backlog)
}
