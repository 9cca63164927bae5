package nats_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/backplane/nats"
)

// End to end through three Troupe servers, each the node of a three-server
// NATS cluster in this process, with real WebSocket clients on 127.0.0.1.

const e2eWait = 30 * time.Second

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startNodes starts three Troupe servers on a three-server NATS cluster and
// returns their WebSocket URLs.
func startNodes(t testing.TB) []string {
	urls, _ := startNodesWith(t, nil)
	return urls
}

// startNodesWith is startNodes with options of the backplanes adjusted by
// mod; it returns the backplanes too.
func startNodesWith(t testing.TB, mod func(*nats.Options)) ([]string, []*nats.Backplane) {
	t.Helper()
	return startNodesServing(t, mod, nil)
}

// startNodesServing is startNodesWith with each node's server adjusted by
// serve: its Config before New, its handlers after.
func startNodesServing(t testing.TB, mod func(*nats.Options), serve *serving) ([]string, []*nats.Backplane) {
	t.Helper()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	bps := make([]*nats.Backplane, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
			defer cancel()
			opts := nats.Options{
				Node:   fmt.Sprintf("node-%d", i),
				Logger: slog.New(slog.DiscardHandler),
				Embedded: &nats.ServerOptions{
					Port:        -1,
					ClusterPort: ports[i],
					Routes:      routes,
					StoreDir:    t.TempDir(),
				},
			}
			if mod != nil {
				mod(&opts)
			}
			bps[i], errs[i] = nats.Open(ctx, opts)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, bp := range bps {
				if bp != nil {
					_ = bp.Close()
				}
			}
			t.Fatalf("node %d: Open: %v", i, err)
		}
	}
	urls := make([]string, 3)
	for i, bp := range bps {
		cfg := troupe.Config{RoomProtocol: true, Backplane: bp,
			Settings: troupe.Settings{MaxQueuedMessages: 10000, RateLimit: -1}}
		if serve != nil {
			serve.config(&cfg)
		}
		srv, err := troupe.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if serve != nil {
			serve.handlers(srv)
		}
		ts := httptest.NewServer(srv)
		urls[i] = "ws" + strings.TrimPrefix(ts.URL, "http")
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			ts.Close()
			if err := bp.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	return urls, bps
}

// serving adjusts the servers of startNodesServing.
type serving struct {
	config   func(*troupe.Config)
	handlers func(*troupe.Server)
}

type envelope struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	ID      json.RawMessage `json:"id"`
}

type roomMessage struct {
	Seq  uint64          `json:"seq"`
	Type string          `json:"type"`
	From string          `json:"from"`
	Body json.RawMessage `json:"body"`
}

// wsClient reads everything its server sends on a goroutine of its own.
type wsClient struct {
	name string
	conn *websocket.Conn

	mu      sync.Mutex
	msgs    []roomMessage
	answers map[string]envelope
	changed chan struct{}
	done    chan struct{}
}

func dialClient(t testing.TB, url, name string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("%s: dial: %v", name, err)
	}
	// room.joined lists every member: in a room of hundreds it passes the
	// client's default 32 KiB limit.
	conn.SetReadLimit(1 << 22)
	c := &wsClient{name: name, conn: conn, answers: map[string]envelope{}, changed: make(chan struct{}, 1), done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	return c
}

func (c *wsClient) close() {
	_ = c.conn.CloseNow()
	<-c.done
}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		_, data, err := c.conn.Read(context.Background())
		if err != nil {
			return
		}
		var e envelope
		if json.Unmarshal(data, &e) != nil {
			continue
		}
		c.mu.Lock()
		if e.Type == "room.message" {
			var m roomMessage
			_ = json.Unmarshal(e.Payload, &m)
			c.msgs = append(c.msgs, m)
		}
		if len(e.ID) > 0 {
			c.answers[string(e.ID)] = e
		}
		c.mu.Unlock()
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
}

func (c *wsClient) send(t testing.TB, typ, id string, payload any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"type": typ, "id": id, "payload": payload})
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("%s: write: %v", c.name, err)
	}
}

// wait waits until cond holds of the client's state.
func (c *wsClient) wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(e2eWait)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("%s: timed out waiting for %s", c.name, what)
		}
	}
}

func (c *wsClient) answer(t testing.TB, id string) envelope {
	t.Helper()
	key := `"` + id + `"`
	c.wait(t, "the answer to "+id, func() bool { _, ok := c.answers[key]; return ok })
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.answers[key]
}

type joined struct {
	Seq       uint64 `json:"seq"`
	Epoch     string `json:"epoch"`
	Recovered bool   `json:"recovered"`
}

func (c *wsClient) join(t testing.TB, room string, since *uint64, epoch string) joined {
	t.Helper()
	p := map[string]any{"room": room}
	if since != nil {
		p["since"], p["epoch"] = *since, epoch
	}
	c.send(t, "room.join", "join-"+room, p)
	e := c.answer(t, "join-"+room)
	if e.Type != "room.joined" {
		t.Fatalf("%s: join answered %s %s", c.name, e.Type, e.Payload)
	}
	var j joined
	_ = json.Unmarshal(e.Payload, &j)
	return j
}

func (c *wsClient) messages() []roomMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

func seqsOf(msgs []roomMessage) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

type body struct {
	P int `json:"p"`
	N int `json:"n"`
}

// TestThreeNodes checks, through three nodes on one NATS cluster: members
// on every node, publishers on two nodes publishing at once; every member
// gets the same messages in the same order, numbered 1..N without a gap or
// a duplicate, each publisher's in the order it sent them; each
// room.published names its message's seq. Then a member leaves its node,
// messages go on, and it comes back through another node with since: it
// gets exactly what it missed.
func TestThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("three-server cluster: not under -short")
	}
	const (
		room         = "e2e"
		perPublisher = 60
		publishers   = 3 // two on node 0, one on node 1
		total        = publishers * perPublisher
	)
	urls := startNodes(t)
	var members []*wsClient
	for i, u := range urls {
		for j := range 2 {
			c := dialClient(t, u, fmt.Sprintf("m%d%d", i, j))
			c.join(t, room, nil, "")
			members = append(members, c)
		}
	}
	pubs := []*wsClient{members[0], members[1], members[2]}
	var wg sync.WaitGroup
	for p, c := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perPublisher {
				b, _ := json.Marshal(map[string]any{"type": "room.publish", "id": fmt.Sprintf("p%d-%d", p, n),
					"payload": map[string]any{"room": room, "body": body{P: p, N: n}}})
				if err := c.conn.Write(context.Background(), websocket.MessageText, b); err != nil {
					t.Errorf("%s: write: %v", c.name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, c := range members {
		c.wait(t, fmt.Sprintf("%d messages", total), func() bool { return len(c.msgs) >= total })
	}
	ref := members[0].messages()
	if got := seqsOf(ref); !slices.Equal(got, seqRange(1, total)) {
		t.Fatalf("%s: seqs %v, want 1..%d", members[0].name, got, total)
	}
	next := make([]int, publishers)
	seqOf := map[body]uint64{}
	for _, m := range ref {
		var b body
		if err := json.Unmarshal(m.Body, &b); err != nil || b.P >= publishers || b.N != next[b.P] {
			t.Fatalf("seq %d has body %s, want publisher %d's #%d next", m.Seq, m.Body, b.P, next[b.P])
		}
		next[b.P]++
		seqOf[b] = m.Seq
	}
	for _, c := range members[1:] {
		got := c.messages()
		if len(got) != total {
			t.Fatalf("%s got %d messages, want %d", c.name, len(got), total)
		}
		for i := range got {
			if got[i].Seq != ref[i].Seq || string(got[i].Body) != string(ref[i].Body) || got[i].From != ref[i].From {
				t.Fatalf("%s: message %d is %+v, %s has %+v", c.name, i, got[i], members[0].name, ref[i])
			}
		}
	}
	for p, c := range pubs {
		for n := range perPublisher {
			e := c.answer(t, fmt.Sprintf("p%d-%d", p, n))
			var ack struct {
				Seq uint64 `json:"seq"`
			}
			_ = json.Unmarshal(e.Payload, &ack)
			if e.Type != "room.published" || ack.Seq != seqOf[body{P: p, N: n}] {
				t.Fatalf("%s: publish #%d answered %s %s, its message has seq %d", c.name, n, e.Type, e.Payload, seqOf[body{P: p, N: n}])
			}
		}
	}

	// A member of node 2 goes; 10 messages later it comes back on node 1.
	mover := members[5]
	j := mover.join(t, room, nil, "") // joining again answers the room's state
	mover.close()
	for n := range 10 {
		pubs[0].send(t, "room.publish", fmt.Sprintf("late-%d", n), map[string]any{"room": room, "body": n})
		pubs[0].answer(t, fmt.Sprintf("late-%d", n))
	}
	last := uint64(total)
	back := dialClient(t, urls[1], "mover-again")
	got := back.join(t, room, &last, j.Epoch)
	// Node 1 may not have received the newest of them yet (they were
	// acknowledged on node 0): those follow as live messages.
	if !got.Recovered || got.Epoch != j.Epoch || got.Seq < total || got.Seq > total+10 {
		t.Fatalf("resume on another node: %+v, want recovered, epoch %q, seq %d..%d", got, j.Epoch, total, total+10)
	}
	back.wait(t, "the missed messages", func() bool { return len(back.msgs) >= 10 })
	if s := seqsOf(back.messages()); !slices.Equal(s, seqRange(total+1, total+10)) {
		t.Fatalf("after resuming from %d: seqs %v, want %d..%d", total, s, total+1, total+10)
	}
}

// consistencyRuns is how often the read-your-writes checks repeat: each of
// the races they guard against was seen in one run of two.
const consistencyRuns = 20

// TestThreeNodesReadYourWrites checks, through three nodes on one NATS
// cluster and in a fresh room each run: a publisher's room.history right
// after its 25 acknowledgements holds all 25 messages; a client that had
// the last of them and comes back through another node gets a room.joined
// whose seq is not below it, recovered.
//
// It shares its three-server cluster with the presence check: each cluster
// start is an election, slow under -race on two cores.
func TestThreeNodesReadYourWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("three-server cluster: not under -short")
	}
	urls := startNodes(t)
	t.Run("history-and-resume", func(t *testing.T) { checkReadYourWrites(t, urls) })
	t.Run("presence-at-join", func(t *testing.T) { checkPresenceAtJoin(t, urls) })
}

func checkReadYourWrites(t *testing.T, urls []string) {
	const count = 25
	for run := range consistencyRuns {
		room := fmt.Sprintf("ryw-%d", run)
		// A member on every node, so that each follows the room.
		for i, u := range urls {
			dialClient(t, u, fmt.Sprintf("r%d-m%d", run, i)).join(t, room, nil, "")
		}
		pub := dialClient(t, urls[run%3], fmt.Sprintf("r%d-pub", run))
		j := pub.join(t, room, nil, "")
		for n := range count {
			pub.send(t, "room.publish", fmt.Sprintf("p-%d", n), map[string]any{"room": room, "body": n})
		}
		var last uint64
		for n := range count {
			e := pub.answer(t, fmt.Sprintf("p-%d", n))
			var ack struct {
				Seq uint64 `json:"seq"`
			}
			_ = json.Unmarshal(e.Payload, &ack)
			if e.Type != "room.published" {
				t.Fatalf("run %d: publish answered %s %s", run, e.Type, e.Payload)
			}
			last = max(last, ack.Seq)
		}
		pub.send(t, "room.history", "hist", map[string]any{"room": room, "limit": 100})
		e := pub.answer(t, "hist")
		var h struct {
			Messages []roomMessage `json:"messages"`
		}
		_ = json.Unmarshal(e.Payload, &h)
		if e.Type != "room.history" || len(h.Messages) != count {
			t.Fatalf("run %d: history right after %d acknowledged publishes: %s with %d messages %s", run, count, e.Type, len(h.Messages), e.Payload)
		}
		pub.close()
		back := dialClient(t, urls[(run+1)%3], fmt.Sprintf("r%d-back", run))
		got := back.join(t, room, &last, j.Epoch)
		if got.Seq < last || !got.Recovered {
			t.Fatalf("run %d: resume from %d on another node: room.joined %+v, want seq >= %d and recovered", run, last, got, last)
		}
	}
}

// checkPresenceAtJoin checks, through three nodes on one NATS
// cluster and in a fresh room each run, that a member whose room.joined
// came back on one node is in the room.joined of a member who joins right
// after on another node, without "presence":"partial".
func checkPresenceAtJoin(t *testing.T, urls []string) {
	for run := range consistencyRuns {
		room := fmt.Sprintf("pj-%d", run)
		a := dialClient(t, urls[run%3], fmt.Sprintf("r%d-a", run))
		a.join(t, room, nil, "")
		b := dialClient(t, urls[(run+1)%3], fmt.Sprintf("r%d-b", run))
		b.send(t, "room.join", "join", map[string]any{"room": room})
		e := b.answer(t, "join")
		var j struct {
			Members  []struct{ ID string } `json:"members"`
			Presence string                `json:"presence"`
		}
		_ = json.Unmarshal(e.Payload, &j)
		if e.Type != "room.joined" || len(j.Members) != 2 || j.Presence != "" {
			t.Fatalf("run %d: a joined on node %d, then b on node %d: %s %s; want both members, no presence flag", run, run%3, (run+1)%3, e.Type, e.Payload)
		}
		a.close()
		b.close()
	}
}
