package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/backplane/memory"
	"github.com/troupehq/troupe/rooms"
)

// Rooms across nodes, on the in-process backplane: three servers, each with
// its own node of one memory.Cluster, and real clients on each.

// startCluster starts n servers sharing one cluster; it returns them and
// the cluster, whose node "node-<i>" is the backplane of servers[i]. tune,
// if given, changes each server's Config.
func startCluster(t *testing.T, n, history int, tune ...func(*troupe.Config)) ([]*testServer, *memory.Cluster) {
	t.Helper()
	c := memory.NewCluster(history)
	servers := make([]*testServer, n)
	for i := range n {
		cfg := troupe.Config{
			RoomProtocol:    true,
			HistoryMessages: history,
			Backplane:       c.Node(fmt.Sprintf("node-%d", i)),
			Authorize:       func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil },
			Settings:        troupe.Settings{MaxQueuedMessages: 10000},
		}
		for _, f := range tune {
			f(&cfg)
		}
		servers[i] = startServer(t, cfg)
	}
	return servers, c
}

// resumeRoom joins room again on p's connection, asking for the messages
// after since in the numbering epoch names, and returns room.joined.
func (p *peer) resumeRoom(t *testing.T, room string, since uint64, epoch string) joinedPayload {
	t.Helper()
	req := joinRequest(room, &since, nil)
	req["epoch"] = epoch
	return p.joinedAnswer(t, p.request(t, "room.join", req))
}

// TestClusterOneOrder checks that members on three nodes, with publishers
// on two of them publishing at once, all see the same messages in the same
// order, numbered 1..N without a gap or duplicate, every publisher's
// messages in the order it sent them, and that room.published carries the
// seq its room.message has.
func TestClusterOneOrder(t *testing.T) {
	const (
		perNode      = 3
		perPublisher = 100
		room         = "lobby"
	)
	servers, _ := startCluster(t, 3, 1000)
	var peers []*peer
	for i, h := range servers {
		for j := range perNode {
			p := h.dialPeer(t, fmt.Sprintf("n%d-m%d", i, j), fmt.Sprintf("user-%d-%d", i, j))
			p.joinRoom(t, room, nil, nil)
			peers = append(peers, p)
		}
	}
	// Publishers: the first two members of nodes 0 and 1.
	pubs := []*peer{peers[0], peers[1], peers[perNode], peers[perNode+1]}
	publishAtOnceAndCheck(t, room, peers, pubs, perPublisher)
}

// TestClusterResumeOnAnotherNode checks that a client that was on one node
// and comes back on another, with the seq and epoch it had, gets exactly
// what it missed, marked recovered, before anything newer.
func TestClusterResumeOnAnotherNode(t *testing.T) {
	const room = "resume"
	servers, _ := startCluster(t, 3, 100)
	stay := servers[1].dialPeer(t, "stay", "stay")
	stay.joinRoom(t, room, nil, nil)
	mover := servers[0].dialPeer(t, "mover", "mover")
	epoch := mover.joinRoom(t, room, nil, nil).Epoch
	for i := range 5 {
		stay.publish(t, room, i)
	}
	mover.waitSeq(t, room, 5)
	mover.shutdown()

	for i := 5; i < 12; i++ {
		stay.publish(t, room, i)
	}
	back := servers[2].dialPeer(t, "mover-again", "mover")
	if j := back.resumeRoom(t, room, 5, epoch); !*j.Recovered || j.Epoch != epoch || j.Seq != 12 {
		t.Fatalf("resume on another node: room.joined %+v (recovered %v), want recovered, seq 12 and epoch %q", j, *j.Recovered, epoch)
	}
	stay.publish(t, room, 12)
	back.waitSeq(t, room, 13)
	if got := seqsOf(back.view(room).msgs); !slices.Equal(got, seqRange(6, 13)) {
		t.Fatalf("after resuming from 5 on another node: seqs %v, want 6..13", got)
	}
}

// TestClusterPresence checks that members on different nodes see each
// other: in room.joined, in presence.diff as they come and go, and that
// the members of a node that goes away vanish from the others' lists.
func TestClusterPresence(t *testing.T) {
	const room = "presence"
	servers, cluster := startCluster(t, 3, 100)
	a := servers[0].dialPeer(t, "a", "alice")
	a.joinRoom(t, room, nil, map[string]string{"color": "red"})
	b := servers[1].dialPeer(t, "b", "bob")
	// b's node learns alice from node 0's announcement, which may come
	// just after b's room.joined: then as a presence.diff.
	b.joinRoom(t, room, nil, nil)
	waitMembers(t, b, room, []string{"alice", "bob"})
	waitMembers(t, a, room, []string{"alice", "bob"})
	if m := b.view(room).members; !slices.ContainsFunc(m, func(e presenceEntry) bool {
		return e.ID == "alice" && jsonEqual(e.Meta, []byte(`{"color":"red"}`))
	}) {
		t.Fatalf("bob's view of alice lacks her meta: %+v", m)
	}

	c := servers[2].dialPeer(t, "c", "carol")
	c.joinRoom(t, room, nil, nil)
	for _, p := range []*peer{a, b, c} {
		waitMembers(t, p, room, []string{"alice", "bob", "carol"})
	}

	// Bob leaves: the others hear of it.
	b.leaveRoom(t, room)
	waitMembers(t, a, room, []string{"alice", "carol"})
	waitMembers(t, c, room, []string{"alice", "carol"})

	// Node 2 goes away with carol on it.
	_ = cluster.Close("node-2")
	waitMembers(t, a, room, []string{"alice"})

	// Every message reached a member who knew its sender.
	for _, p := range []*peer{a, b, c} {
		if s := p.view(room).strangers; len(s) > 0 {
			t.Errorf("%s saw messages from members it was not told about: %v", p.name, s)
		}
	}
}

// TestClusterPresenceChurn: six members on two nodes join, leave and join
// again at random, and now and then one of them publishes, while presence
// is gathered, paced and carried across the backplane. At the end every
// member's list is the room's members with their meta, and nobody got a
// message from a member it had not been told about.
func TestClusterPresenceChurn(t *testing.T) {
	const room = "churn"
	servers, _ := startCluster(t, 2, 100)
	rng := rand.New(rand.NewPCG(7, 8))
	peers := make([]*peer, 6)
	for i := range peers {
		name := fmt.Sprintf("u%d", i)
		peers[i] = servers[i%2].dialPeer(t, name, name)
	}
	in := make([]bool, len(peers))
	meta := map[string]string{} // a member's id: the meta of its last join
	for op := range 150 {
		i := rng.IntN(len(peers))
		switch {
		case !in[i]:
			meta[peers[i].name] = fmt.Sprintf(`{"n":%d}`, op)
			peers[i].joinRoom(t, room, nil, json.RawMessage(meta[peers[i].name]))
		case rng.IntN(4) == 0:
			peers[i].publish(t, room, fmt.Sprintf("m%d", op))
			continue
		default:
			peers[i].leaveRoom(t, room)
		}
		in[i] = !in[i]
		if rng.IntN(3) == 0 {
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		}
	}
	// The last change on each node is a leave from a room that keeps
	// members there: no later join's announcement, nor the room stopping
	// on that node, carries it to the other node.
	for node := range 2 {
		mine := []int{node, node + 2, node + 4}
		for _, i := range mine[1:] {
			if !in[i] {
				meta[peers[i].name] = fmt.Sprintf(`{"n":%d}`, 1000+i)
				peers[i].joinRoom(t, room, nil, json.RawMessage(meta[peers[i].name]))
				in[i] = true
			}
		}
		peers[mine[1]].leaveRoom(t, room)
		in[mine[1]] = false
	}
	var want []string
	for i, p := range peers {
		if in[i] {
			want = append(want, p.name)
		}
	}
	for i, p := range peers {
		if in[i] {
			waitMembers(t, p, room, want)
			// The ids can match before the last diff (a leave and a join
			// again, with another meta) arrives: wait for the meta too.
			stale := func(m presenceEntry) bool { return !jsonEqual(m.Meta, []byte(meta[m.ID])) }
			for slices.ContainsFunc(p.view(room).members, stale) {
				p.pump(t)
			}
		}
		if s := p.view(room).strangers; len(s) > 0 {
			t.Errorf("%s got messages from members it was not told about: %v", p.name, s)
		}
	}
}

// waitMembers takes in p's frames until its view of room lists exactly
// want (by member id).
func waitMembers(t *testing.T, p *peer, room string, want []string) {
	t.Helper()
	slices.Sort(want)
	for !slices.Equal(p.view(room).ids(), want) {
		p.pump(t)
	}
}

// TestClusterFillsGaps checks that a node whose feed lost messages on the
// way fetches them from the log: its members still see every seq once, in
// order.
func TestClusterFillsGaps(t *testing.T) {
	const room = "gaps"
	servers, cluster := startCluster(t, 2, 100)
	pub := servers[0].dialPeer(t, "pub", "pub")
	pub.joinRoom(t, room, nil, nil)
	far := servers[1].dialPeer(t, "far", "far")
	far.joinRoom(t, room, nil, nil)
	pub.publish(t, room, 0)
	far.waitSeq(t, room, 1)

	cluster.LoseDeliveries("node-1", 3)
	for i := 1; i < 10; i++ {
		pub.publish(t, room, i)
	}
	far.waitSeq(t, room, 10)
	if got := seqsOf(far.view(room).msgs); !slices.Equal(got, seqRange(1, 10)) {
		t.Fatalf("member on the node that lost 3 deliveries got seqs %v, want 1..10", got)
	}
}

// flakyNode is a cluster node whose backplane calls fail while told to.
type flakyNode struct {
	rooms.Backplane
	failFollow  atomic.Bool
	failPublish atomic.Bool
}

func (n *flakyNode) Follow(ctx context.Context, room string, deliver func(rooms.Entry)) (*rooms.Feed, error) {
	if n.failFollow.Load() {
		return nil, errors.New("no cluster")
	}
	return n.Backplane.Follow(ctx, room, deliver)
}

func (n *flakyNode) Publish(ctx context.Context, room string, count int, build func(uint64) [][]byte) (uint64, error) {
	if n.failPublish.Load() {
		return 0, errors.New("no leader")
	}
	return n.Backplane.Publish(ctx, room, count, build)
}

// TestClusterUnavailable checks that when the backplane fails, clients are
// told so with the code "unavailable" (a join, a publish), nothing is
// published in silence, and the room works again once the backplane does.
func TestClusterUnavailable(t *testing.T) {
	const room = "flaky"
	node := &flakyNode{Backplane: memory.NewCluster(100).Node("only")}
	h := startServer(t, troupe.Config{RoomProtocol: true, Backplane: node})
	p := h.dialPeer(t, "p", "")

	node.failFollow.Store(true)
	expectError(t, "join while the backplane is down", p.request(t, "room.join", joinRequest(room, nil, nil)), "unavailable")
	node.failFollow.Store(false)
	p.joinRoom(t, room, nil, nil)

	node.failPublish.Store(true)
	expectError(t, "publish while the backplane is down", p.request(t, "room.publish", map[string]any{"room": room, "body": 1}), "unavailable")
	node.failPublish.Store(false)
	if seq := p.publish(t, room, 2); seq != 1 {
		t.Fatalf("first message taken got seq %d, want 1: the refused one must not count", seq)
	}
	p.waitSeq(t, room, 1)
	if got := p.view(room).msgs; len(got) != 1 || string(got[0].Body) != "2" {
		t.Fatalf("room has %+v, want only the message taken", got)
	}
}

// TestClusterBroadcast checks that Server.Broadcast, BroadcastExcept and a
// room logic's Room.Broadcast reach the room's members on every node,
// once, and not the excepted sender.
func TestClusterBroadcast(t *testing.T) {
	const room = "bcast"
	servers, _ := startCluster(t, 3, 100)
	var peers []*peer
	for i, h := range servers {
		p := h.dialPeer(t, fmt.Sprintf("b%d", i), fmt.Sprintf("user-%d", i))
		p.joinRoom(t, room, nil, nil)
		peers = append(peers, p)
	}
	// Every node must know the room's members before a broadcast can
	// reach them: wait until presence has gone round.
	for _, p := range peers {
		waitMembers(t, p, room, []string{"user-0", "user-1", "user-2"})
	}
	if err := servers[0].srv.Broadcast(room, "news", map[string]int{"n": 1}); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	sender := servers[1].srv.Session(peers[1].sid)
	if err := servers[1].srv.BroadcastExcept(room, sender, "news", map[string]int{"n": 2}); err != nil {
		t.Fatalf("BroadcastExcept: %v", err)
	}
	if err := servers[2].srv.Broadcast(room, "news", map[string]int{"n": 3}); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	want := map[string][]int{"b0": {1, 2, 3}, "b1": {1, 3}, "b2": {1, 2, 3}}
	for _, p := range peers {
		var got []int
		for len(got) < len(want[p.name]) {
			e := p.nextEnvelope(t)
			if e.Type != "news" {
				continue
			}
			got = append(got, decodePayload[struct{ N int }](t, e).N)
		}
		slices.Sort(got)
		if !slices.Equal(got, want[p.name]) {
			t.Fatalf("%s got broadcasts %v, want %v", p.name, got, want[p.name])
		}
	}
	// Nothing more: each broadcast arrived once. A room message after
	// them is the next frame each of them reads.
	peers[0].publish(t, room, "after")
	for _, p := range peers[1:] {
		if e := p.nextEnvelope(t); e.Type != "room.message" {
			t.Fatalf("%s: after the broadcasts came %s %s, want the room message", p.name, e.Type, e.Payload)
		}
	}
}

// TestClusterResumeOnLaggingNode checks that a client resuming through a
// node whose feed is behind (it lost the last deliveries and nothing newer
// came to show the gap) is not told recovered: false: the node catches up
// from the log first, and the client gets exactly what it missed.
func TestClusterResumeOnLaggingNode(t *testing.T) {
	const room = "lagging"
	servers, cluster := startCluster(t, 2, 100)
	pub := servers[0].dialPeer(t, "pub", "pub")
	pub.joinRoom(t, room, nil, nil)
	stay := servers[1].dialPeer(t, "stay", "stay")
	epoch := stay.joinRoom(t, room, nil, nil).Epoch
	pub.publish(t, room, 1)
	stay.waitSeq(t, room, 1)

	cluster.LoseDeliveries("node-1", 3)
	for i := 2; i <= 4; i++ {
		pub.publish(t, room, i)
	}
	// pub saw 1..4 on node 0; it comes back through node 1, which has 1.
	pub.waitSeq(t, room, 4)
	pub.shutdown()
	back := servers[1].dialPeer(t, "pub-again", "pub")
	if j := back.resumeRoom(t, room, 2, epoch); !*j.Recovered || j.Seq != 4 {
		t.Fatalf("resume from 2 through the lagging node: room.joined %+v (recovered %v), want recovered and seq 4", j, *j.Recovered)
	}
	back.waitSeq(t, room, 4)
	if s := seqsOf(back.view(room).msgs); !slices.Equal(s, seqRange(3, 4)) {
		t.Fatalf("after resuming from 2: seqs %v, want 3..4", s)
	}
	// The member that stayed on the lagging node gets them too.
	stay.waitSeq(t, room, 4)
	if s := seqsOf(stay.view(room).msgs); !slices.Equal(s, seqRange(1, 4)) {
		t.Fatalf("member of the lagging node: seqs %v, want 1..4", s)
	}
}

// consistencyRuns is how often the read-your-writes tests repeat: each of
// the races they guard against was seen in one run of two.
const consistencyRuns = 20

// TestClusterReadYourWrites checks, over three nodes whose copies of the
// room trail the log (every other run by 100ms on the publisher's node),
// that a publisher's room.history holds every message it was acknowledged,
// on the node it published through, at once after the acknowledgements.
func TestClusterReadYourWrites(t *testing.T) {
	const (
		room  = "ryw"
		count = 25
	)
	for run := range consistencyRuns {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			servers, cluster := startCluster(t, 3, 1000)
			if run%2 == 1 {
				cluster.DelayDeliveries("node-0", 100*time.Millisecond)
			}
			other := servers[1].dialPeer(t, "other", "other")
			other.joinRoom(t, room, nil, nil)
			p := servers[0].dialPeer(t, "pub", "pub")
			p.joinRoom(t, room, nil, nil)
			ids := make([]string, count)
			for i := range count {
				ids[i] = p.post(t, "room.publish", map[string]any{"room": room, "body": i})
			}
			var acked []uint64
			for _, id := range ids {
				e := p.await(t, id)
				if e.Type != "room.published" {
					t.Fatalf("publish answered %s %s", e.Type, e.Payload)
				}
				acked = append(acked, decodePayload[publishedPayload](t, e).Seq)
			}
			e := p.request(t, "room.history", map[string]any{"room": room, "limit": 100})
			if e.Type != "room.history" {
				t.Fatalf("history answered %s %s", e.Type, e.Payload)
			}
			var got []uint64
			for _, raw := range decodePayload[historyPayload](t, e).Messages {
				var m roomMessage
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				got = append(got, m.Seq)
			}
			for _, s := range acked {
				if !slices.Contains(got, s) {
					t.Fatalf("history right after %d acknowledged publishes holds seqs %v: acknowledged seq %d missing", count, got, s)
				}
			}
		})
	}
}

// TestClusterMonotonicResume checks that a client that had seq N on one
// node and comes back through another node whose copy trails the log by
// 100ms gets a room.joined with seq N or more, recovered, never an older
// view; and that a room.history there holds what it had.
func TestClusterMonotonicResume(t *testing.T) {
	const room = "mono"
	for run := range consistencyRuns {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			servers, cluster := startCluster(t, 3, 1000)
			cluster.DelayDeliveries("node-2", 100*time.Millisecond)
			stay := servers[2].dialPeer(t, "stay", "stay")
			stay.joinRoom(t, room, nil, nil)
			mover := servers[0].dialPeer(t, "mover", "mover")
			epoch := mover.joinRoom(t, room, nil, nil).Epoch
			var last uint64
			for i := range 10 {
				last = mover.publish(t, room, i)
			}
			mover.waitSeq(t, room, last)
			mover.shutdown()
			back := servers[2].dialPeer(t, "mover-again", "mover")
			j := back.resumeRoom(t, room, last, epoch)
			if j.Seq < last || !*j.Recovered || j.Epoch != epoch {
				t.Fatalf("resume from %d through a lagging node: room.joined seq %d recovered %v epoch %q, want seq >= %d, recovered, epoch %q",
					last, j.Seq, *j.Recovered, j.Epoch, last, epoch)
			}
			e := back.request(t, "room.history", map[string]any{"room": room, "limit": 100})
			if n := len(decodePayload[historyPayload](t, e).Messages); n < int(last) {
				t.Fatalf("history after resuming from %d holds %d messages", last, n)
			}
		})
	}
}

// TestClusterPresenceAtJoin checks that a member whose room.joined was
// acknowledged on one node is in the room.joined of a member who joins on
// another node right after, with no "presence":"partial" flag: on the
// in-process backplane the other nodes' lists can always be fetched.
func TestClusterPresenceAtJoin(t *testing.T) {
	const room = "pjoin"
	for run := range consistencyRuns {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			servers, _ := startCluster(t, 3, 100)
			a := servers[run%3].dialPeer(t, "a", "alice")
			a.joinRoom(t, room, nil, nil)
			b := servers[(run+1)%3].dialPeer(t, "b", "bob")
			e := b.request(t, "room.join", joinRequest(room, nil, nil))
			j := b.joinedAnswer(t, e)
			var flag struct {
				Presence string `json:"presence"`
			}
			_ = json.Unmarshal(e.Payload, &flag)
			ids := make([]string, 0, len(j.Members))
			for _, m := range j.Members {
				ids = append(ids, m.ID)
			}
			if !slices.Contains(ids, "alice") || flag.Presence != "" {
				t.Fatalf("bob joined right after alice's room.joined, on another node: members %v, presence %q; want alice listed, no flag", ids, flag.Presence)
			}
		})
	}
}
