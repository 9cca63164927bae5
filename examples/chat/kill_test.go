package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The multi-process test: three chat processes form a cluster on
// 127.0.0.1, each embedding a NATS server routed to the others. Members on
// every node receive a stream of messages while the node that leads the
// rooms' JetStream stream is killed with SIGKILL and started again. Nobody
// may lose, repeat or skip a message; the sequence must go on where it was.

const (
	clusterRoom  = "kill"
	clusterWait  = 60 * time.Second // bounds every wait on the cluster
	beforeKill   = 40               // messages published before the kill
	afterKill    = 60               // and after it, while the node is down
	afterRestart = 20               // and once it is back
	afterStop    = 40               // after a graceful stop of the leader
)

// chatNode is one chat process.
type chatNode struct {
	name     string
	addr     string // HTTP
	cluster  string // NATS cluster port
	natsPort int
	args     []string
	cmd      *exec.Cmd
	logPath  string
	exited   chan struct{}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (n *chatNode) start(t *testing.T, bin string) {
	t.Helper()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(bin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", n.name, err)
	}
	n.exited = make(chan struct{})
	go func() {
		_ = n.cmd.Wait()
		logf.Close()
		close(n.exited)
	}()
}

// ready waits until the node serves its page: it does so once it has
// joined the cluster.
func (n *chatNode) ready(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	client := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-n.exited:
			t.Fatalf("%s exited while starting:\n%s", n.name, n.logTail())
		default:
		}
		if resp, err := client.Get("http://" + n.addr + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not serving after %v:\n%s", n.name, clusterWait, n.logTail())
}

func (n *chatNode) kill() {
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

// stop asks the node to stop as an operator would (SIGTERM), and kills it
// if it does not within the bound.
func (n *chatNode) stop(t *testing.T) {
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30 s of SIGTERM:\n%s", n.name, n.logTail())
		n.kill()
	}
}

func (n *chatNode) logTail() string {
	b, _ := os.ReadFile(n.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// member is a chat client that stays in the room across node failures:
// when its node goes away it joins through another node, resuming from the
// last seq it has.
type member struct {
	name  string
	nodes []*chatNode // tried in order, from its current node on

	mu      sync.Mutex
	seqs    []uint64
	texts   map[uint64]string
	epoch   string
	moves   int // times it resumed through another node
	unrecov int // resumes that were not recovered
	conn    *websocket.Conn
	replies map[string]chan envelope
	changed chan struct{}
}

func newMember(name string, nodes []*chatNode) *member {
	return &member{name: name, nodes: nodes, texts: map[uint64]string{}, replies: map[string]chan envelope{}, changed: make(chan struct{}, 1)}
}

func (m *member) last() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.seqs) == 0 {
		return 0
	}
	return m.seqs[len(m.seqs)-1]
}

// connect joins the room through the first node that answers and returns
// the node's index.
func (m *member) connect(ctx context.Context, first int) (int, error) {
	var errs []error
	for i := range m.nodes {
		k := (first + i) % len(m.nodes)
		n := m.nodes[k]
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, _, err := websocket.Dial(c, "ws://"+n.addr+"/ws?name="+url.QueryEscape(m.name), nil)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		conn.SetReadLimit(1 << 20)
		join := map[string]any{"room": clusterRoom}
		m.mu.Lock()
		since, epoch := uint64(0), m.epoch
		if len(m.seqs) > 0 {
			since = m.seqs[len(m.seqs)-1]
		}
		m.conn = conn
		m.mu.Unlock()
		if epoch != "" {
			join["since"], join["epoch"] = since, epoch
		}
		b, _ := json.Marshal(map[string]any{"type": "room.join", "payload": join, "id": "join"})
		if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
			_ = conn.CloseNow()
			errs = append(errs, err)
			continue
		}
		return k, nil
	}
	return -1, fmt.Errorf("%s: no node took the connection: %v", m.name, errs)
}

// run reads until ctx ends, moving to another node when its node dies.
func (m *member) run(ctx context.Context, at int, fail func(error)) {
	for ctx.Err() == nil {
		k, err := m.connect(ctx, at)
		if err != nil {
			if ctx.Err() == nil {
				fail(err)
			}
			return
		}
		err = m.read(ctx)
		m.mu.Lock()
		conn := m.conn
		m.mu.Unlock()
		_ = conn.CloseNow()
		if ctx.Err() != nil {
			return
		}
		var ce websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.StatusGoingAway {
			fail(fmt.Errorf("%s: closed by the server: %v", m.name, err))
			return
		}
		m.mu.Lock()
		m.moves++
		m.mu.Unlock()
		at = k + 1
	}
}

func (m *member) read(ctx context.Context) error {
	m.mu.Lock()
	conn := m.conn
	m.mu.Unlock()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		var env envelope
		if err := json.Unmarshal(data, &env); err != nil {
			return fmt.Errorf("not an envelope: %s", data)
		}
		switch env.Type {
		case "room.joined":
			var j struct {
				Seq       uint64 `json:"seq"`
				Epoch     string `json:"epoch"`
				Recovered bool   `json:"recovered"`
			}
			_ = json.Unmarshal(env.Payload, &j)
			m.mu.Lock()
			if m.epoch != "" && !j.Recovered {
				m.unrecov++
			}
			if m.epoch != "" && j.Epoch != m.epoch {
				m.unrecov++ // a new numbering: everything before is lost
			}
			m.epoch = j.Epoch
			m.mu.Unlock()
		case "room.message":
			var msg wireMessage
			if err := json.Unmarshal(env.Payload, &msg); err != nil {
				return err
			}
			m.mu.Lock()
			m.seqs = append(m.seqs, msg.Seq)
			m.texts[msg.Seq] = msg.Body.Text
			m.mu.Unlock()
			select {
			case m.changed <- struct{}{}:
			default:
			}
		}
		if len(env.ID) > 0 {
			var id string
			_ = json.Unmarshal(env.ID, &id)
			m.mu.Lock()
			ch := m.replies[id]
			delete(m.replies, id)
			m.mu.Unlock()
			if ch != nil {
				ch <- env
			}
		}
	}
}

// publish sends text and waits for its answer.
func (m *member) publish(ctx context.Context, id, text string) (envelope, error) {
	ch := make(chan envelope, 1)
	m.mu.Lock()
	m.replies[id] = ch
	conn := m.conn
	m.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"type": "room.publish", "id": id,
		"payload": map[string]any{"room": clusterRoom, "body": map[string]string{"text": text}}})
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		return envelope{}, err
	}
	select {
	case e := <-ch:
		return e, nil
	case <-time.After(20 * time.Second):
		m.mu.Lock()
		delete(m.replies, id)
		m.mu.Unlock()
		return envelope{}, fmt.Errorf("no answer to %s within 20 s", id)
	}
}

// waitSeq waits until the member has seq.
func (m *member) waitSeq(t *testing.T, seq uint64) {
	t.Helper()
	deadline := time.After(clusterWait)
	for m.last() < seq {
		select {
		case <-m.changed:
		case <-deadline:
			t.Fatalf("%s has up to seq %d, want %d", m.name, m.last(), seq)
		}
	}
}

// streamLeader asks the cluster which server leads the rooms' stream.
func streamLeader(t *testing.T, n *chatNode) string {
	t.Helper()
	return streamLeaderWhen(t, n, func(*jetstream.StreamInfo) bool { return true })
}

// healthyLeader waits until every replica of the stream is current, as an
// operator does between two steps of a rolling restart, and returns the
// leader.
func healthyLeader(t *testing.T, n *chatNode) string {
	t.Helper()
	return streamLeaderWhen(t, n, func(info *jetstream.StreamInfo) bool {
		if len(info.Cluster.Replicas) < 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		return true
	})
}

func streamLeaderWhen(t *testing.T, n *chatNode, ok func(*jetstream.StreamInfo) bool) string {
	t.Helper()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", n.natsPort), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to %s's NATS server: %v", n.name, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(clusterWait)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, "TROUPE_ROOMS")
		if err == nil {
			var info *jetstream.StreamInfo
			info, err = s.Info(ctx)
			if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && ok(info) {
				cancel()
				return info.Cluster.Leader
			}
		}
		cancel()
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no leader for the stream after %v", clusterWait)
	return ""
}

// TestKillStreamLeader runs three chat processes, kills the one leading the
// stream with SIGKILL in the middle of a stream of messages, and starts it
// again. Members of the killed node come back through the others and,
// later, one comes back through the restarted node; every member must end
// with every message once, in one gap-free order, the sequence going on
// where it was. It reports how long publishing paused.
func TestKillStreamLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cluster test: not under -short")
	}
	nodes, bin := startChatCluster(t)
	leaderName := streamLeader(t, nodes[0])
	leader := slices.IndexFunc(nodes, func(n *chatNode) bool { return n.name == leaderName })
	if leader < 0 {
		t.Fatalf("stream leader %q is none of the nodes", leaderName)
	}
	t.Logf("stream leader: %s", leaderName)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	errs := make(chan error, 32)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	checkErrs := func() {
		t.Helper()
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	}

	// Two members on every node; the publisher is a member of a node that
	// is not the leader.
	var members []*member
	for i := range nodes {
		for j := range 2 {
			m := newMember(fmt.Sprintf("m%d%d", i, j), nodes)
			members = append(members, m)
			wg.Add(1)
			go func() { defer wg.Done(); m.run(ctx, i, fail) }()
		}
	}
	pubAt := (leader + 1) % len(nodes)
	pub := newMember("publisher", nodes)
	members = append(members, pub)
	wg.Add(1)
	go func() { defer wg.Done(); pub.run(ctx, pubAt, fail) }()

	var (
		acked   = map[string]uint64{} // text -> seq
		retried = map[string]bool{}
		ackAt   []time.Time
		n       int
	)
	publishOne := func() {
		t.Helper()
		text := fmt.Sprintf("msg-%03d", n)
		n++
		for attempt := 0; ; attempt++ {
			checkErrs()
			id := fmt.Sprintf("%s-%d", text, attempt)
			e, err := pub.publish(ctx, id, text)
			if err != nil {
				// The publisher's node stopped under it: it moves to
				// another and sends again.
				if attempt > 200 {
					t.Fatalf("publish %s: %v", text, err)
				}
				retried[text] = true
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if e.Type == "room.published" {
				var p wirePublished
				_ = json.Unmarshal(e.Payload, &p)
				acked[text] = p.Seq
				ackAt = append(ackAt, time.Now())
				return
			}
			var we wireError
			_ = json.Unmarshal(e.Payload, &we)
			if we.Code != "unavailable" || attempt > 200 {
				t.Fatalf("publish %s answered %s %s", text, e.Type, e.Payload)
			}
			retried[text] = true
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitJoined(t, members, checkErrs)
	for range beforeKill {
		publishOne()
	}
	nodes[leader].kill()
	t.Logf("killed %s (SIGKILL) after %d messages", leaderName, beforeKill)
	for range afterKill {
		publishOne()
	}
	nodes[leader].start(t, bin)
	nodes[leader].ready(t)
	// A member comes back through the restarted node.
	// It was last here at the kill, and has everything up to then.
	back := newMember("returner", nodes)
	resumeFrom := acked[fmt.Sprintf("msg-%03d", beforeKill-1)]
	back.epoch, back.seqs = members[0].epochNow(), []uint64{resumeFrom}
	wg.Add(1)
	go func() { defer wg.Done(); back.run(ctx, leader, fail) }()
	for range afterRestart {
		publishOne()
	}

	// A rolling restart: the node that now leads the stream is stopped
	// gracefully (SIGTERM), which hands the leadership over first, and
	// started again.
	stopName := healthyLeader(t, nodes[(leader+1)%len(nodes)])
	stopped := slices.IndexFunc(nodes, func(n *chatNode) bool { return n.name == stopName })
	stopFrom := len(ackAt) - 1
	stopAt := time.Now()
	nodes[stopped].stop(t)
	t.Logf("stopped %s (SIGTERM), the stream leader, in %v; the publisher was on it: %v", stopName,
		time.Since(stopAt).Round(time.Millisecond), stopped == pubAt)
	for range afterStop {
		publishOne()
	}
	stopTo := len(ackAt) - 1
	nodes[stopped].start(t, bin)
	nodes[stopped].ready(t)
	publishOne()
	final := acked[fmt.Sprintf("msg-%03d", n-1)]
	for _, m := range append(members, back) {
		m.waitSeq(t, final)
	}
	checkErrs()

	// The pauses: the longest wait between two acknowledgements after the
	// kill, and after the graceful stop.
	gap := func(from, to int) (d time.Duration) {
		for i := from + 1; i <= to; i++ {
			d = max(d, ackAt[i].Sub(ackAt[i-1]))
		}
		return d
	}
	t.Logf("publishing paused %v after SIGKILL of the stream leader, %v after SIGTERM of the next one; %d messages, final seq %d",
		gap(beforeKill-1, beforeKill+afterKill-1).Round(time.Millisecond),
		gap(stopFrom, stopTo).Round(time.Millisecond), n, final)

	// Every member: seq 1..final once each, in order, the same text for
	// each seq on every member, every acknowledged message at its seq.
	ref := members[0]
	for _, m := range append(members, back) {
		m.mu.Lock()
		seqs, texts, moves, unrecov := slices.Clone(m.seqs), m.texts, m.moves, m.unrecov
		m.mu.Unlock()
		first := uint64(1)
		if m == back {
			// Its first seq is where it resumed from, not one it received.
			first, seqs = resumeFrom+1, seqs[1:]
		}
		for i, s := range seqs {
			if s != seqs[0]+uint64(i) {
				t.Fatalf("%s: seqs not consecutive at %d: %v", m.name, i, seqs[max(0, i-3):min(len(seqs), i+3)])
			}
		}
		if len(seqs) == 0 || seqs[0] != first || seqs[len(seqs)-1] != final {
			t.Fatalf("%s has %d messages, want %d..%d once each", m.name, len(seqs), first, final)
		}
		if unrecov > 0 {
			t.Errorf("%s: %d resumes were not recovered", m.name, unrecov)
		}
		for _, s := range seqs {
			if texts[s] != ref.texts[s] {
				t.Fatalf("%s has %q at seq %d, %s has %q", m.name, texts[s], s, ref.name, ref.texts[s])
			}
		}
		if m.name[1] == byte('0'+leader) && moves == 0 {
			t.Errorf("%s was on the killed node but never moved", m.name)
		}
	}
	for text, seq := range acked {
		if ref.texts[seq] != text {
			t.Fatalf("%q was acknowledged with seq %d, which holds %q", text, seq, ref.texts[seq])
		}
	}
	seen := map[string]int{}
	for _, text := range ref.texts {
		seen[text]++
	}
	for text, c := range seen {
		if c > 1 && !retried[text] {
			t.Fatalf("%q is in the room %d times but was sent once", text, c)
		}
	}
}

// startChatCluster builds the chat and starts three processes of it on
// 127.0.0.1, forming one cluster; they are stopped when the test ends.
func startChatCluster(t *testing.T) ([]*chatNode, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "chat")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	nodes := make([]*chatNode, 3)
	for i := range nodes {
		nodes[i] = &chatNode{
			name:     fmt.Sprintf("n%d", i),
			addr:     fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			cluster:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			natsPort: freePort(t),
			logPath:  filepath.Join(dir, fmt.Sprintf("n%d.log", i)),
		}
	}
	for i, n := range nodes {
		var routes []string
		for j, o := range nodes {
			if j != i {
				routes = append(routes, o.cluster)
			}
		}
		n.args = []string{"-addr", n.addr, "-node", n.name, "-cluster", n.cluster,
			"-routes", strings.Join(routes, ","), "-nats-port", strconv.Itoa(n.natsPort),
			"-data", filepath.Join(dir, "data-"+n.name)}
		n.start(t, bin)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop(t)
		}
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("log of %s:\n%s", n.name, n.logTail())
			}
		}
	})
	for _, n := range nodes {
		n.ready(t)
	}
	return nodes, bin
}

func (m *member) epochNow() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epoch
}

// waitJoined waits until every member has an epoch, that is, its
// room.joined.
func waitJoined(t *testing.T, members []*member, checkErrs func()) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	for _, m := range members {
		for m.epochNow() == "" {
			checkErrs()
			if time.Now().After(deadline) {
				t.Fatalf("%s never joined", m.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
