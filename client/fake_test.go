package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wait bounds every wait of these tests.
const wait = 5 * time.Second

// fakeServer is a scripted server on 127.0.0.1: each connection is handed
// to the test, which reads what the client sent and writes what it likes,
// including what a correct Troupe server never would.
type fakeServer struct {
	URL    string
	conns  chan *fakeConn
	ndjson bool
	ts     *httptest.Server

	mu   sync.Mutex
	open []*fakeConn
}

type fakeConn struct {
	t    *testing.T
	ws   *websocket.Conn
	in   chan envelope
	done chan struct{}
}

func newFakeServer(t *testing.T, ndjson bool) *fakeServer {
	t.Helper()
	fs := &fakeServer{conns: make(chan *fakeConn, 16), ndjson: ndjson}
	fs.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opts := &websocket.AcceptOptions{}
		if fs.ndjson {
			opts.Subprotocols = []string{SubprotocolNDJSON}
		}
		ws, err := websocket.Accept(w, r, opts)
		if err != nil {
			return
		}
		fc := &fakeConn{t: t, ws: ws, in: make(chan envelope, 64), done: make(chan struct{})}
		fs.mu.Lock()
		fs.open = append(fs.open, fc)
		fs.mu.Unlock()
		fs.conns <- fc
		defer close(fc.done)
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				close(fc.in)
				return
			}
			var env envelope
			if json.Unmarshal(data, &env) == nil {
				fc.in <- env
			}
		}
	}))
	fs.URL = "ws" + strings.TrimPrefix(fs.ts.URL, "http")
	t.Cleanup(func() {
		fs.mu.Lock()
		open := fs.open
		fs.mu.Unlock()
		for _, fc := range open {
			_ = fc.ws.CloseNow()
			<-fc.done
		}
		fs.ts.Close()
	})
	return fs
}

// accept returns the next connection the client made.
func (fs *fakeServer) accept(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-fs.conns:
		return fc
	case <-time.After(wait):
		t.Fatal("no connection from the client")
		return nil
	}
}

// expect returns the next envelope the client sent, skipping pings.
func (fc *fakeConn) expect(typ string) envelope {
	fc.t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case env, ok := <-fc.in:
			if !ok {
				fc.t.Fatalf("connection ended while waiting for %s", typ)
			}
			if env.Type == "ping" && typ != "ping" {
				continue
			}
			if env.Type != typ {
				fc.t.Fatalf("client sent %s (%s), want %s", env.Type, env.Payload, typ)
			}
			return env
		case <-timer.C:
			fc.t.Fatalf("client sent no %s", typ)
		}
	}
}

// send writes lines as one frame (several only make sense under ndjson).
func (fc *fakeConn) send(lines ...string) {
	fc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := fc.ws.Write(ctx, websocket.MessageText, []byte(strings.Join(lines, "\n"))); err != nil {
		fc.t.Fatalf("write: %v", err)
	}
}

func dialFake(t *testing.T, fs *fakeServer, opts *Options) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := Dial(ctx, []string{fs.URL}, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// recv waits for the next value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestNDJSONFrameIsSplitInOrder(t *testing.T) {
	fs := newFakeServer(t, true)
	got := make(chan int, 8)
	c := dialFake(t, fs, nil)
	Handle(c, "n", func(n int) { got <- n })
	fc := fs.accept(t)
	fc.send(`{"type":"n","payload":1}`, `{"type":"n","payload":2}`, ``, `{"type":"n","payload":3}`)
	for want := 1; want <= 3; want++ {
		if n := recv(t, got, "a message"); n != want {
			t.Fatalf("got %d, want %d", n, want)
		}
	}
}

// A resume that delivers messages the room has already seen (a server
// whose answer overlaps what came before the cut) must not repeat them.
func TestResumeDropsWhatWasSeen(t *testing.T) {
	fs := newFakeServer(t, true)
	c := dialFake(t, fs, &Options{MinDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond})
	room := c.Room("r")
	msgs := make(chan uint64, 32)
	recovers := make(chan Recover, 4)
	room.OnMessage(func(m Message) { msgs <- m.Seq })
	room.OnRecover(func(r Recover) { recovers <- r })

	fc := fs.accept(t)
	joined := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err := room.Join(ctx, map[string]string{"name": "ann"})
		joined <- err
	}()
	join := fc.expect("room.join")
	if strings.Contains(string(join.Payload), "since") {
		t.Fatalf("a first join carries no since: %s", join.Payload)
	}
	fc.send(`{"type":"room.joined","id":`+string(join.ID)+`,"payload":{"room":"r","seq":0,"epoch":"e1","members":[],"recovered":false}}`,
		`{"type":"room.message","payload":{"room":"r","seq":1,"from":"b","body":1}}`,
		`{"type":"room.message","payload":{"room":"r","seq":2,"from":"b","body":2}}`,
		`{"type":"room.message","payload":{"room":"r","seq":3,"from":"b","body":3}}`)
	if err := recv(t, joined, "Join"); err != nil {
		t.Fatalf("Join: %v", err)
	}
	for want := uint64(1); want <= 3; want++ {
		if got := recv(t, msgs, "a message"); got != want {
			t.Fatalf("seq %d, want %d", got, want)
		}
	}

	_ = fc.ws.CloseNow()
	fc = fs.accept(t)
	rejoin := fc.expect("room.join")
	var p struct {
		Since *uint64         `json:"since"`
		Epoch string          `json:"epoch"`
		Meta  json.RawMessage `json:"meta"`
	}
	if err := json.Unmarshal(rejoin.Payload, &p); err != nil || p.Since == nil || *p.Since != 3 || p.Epoch != "e1" || string(p.Meta) != `{"name":"ann"}` {
		t.Fatalf("rejoin %s, want since 3, epoch e1 and the meta", rejoin.Payload)
	}
	fc.send(`{"type":"room.joined","id":`+string(rejoin.ID)+`,"payload":{"room":"r","seq":5,"epoch":"e1","members":[],"recovered":true}}`,
		`{"type":"room.message","payload":{"room":"r","seq":2,"from":"b","body":2}}`,
		`{"type":"room.message","payload":{"room":"r","seq":3,"from":"b","body":3}}`,
		`{"type":"room.message","payload":{"room":"r","seq":4,"from":"b","body":4}}`,
		`{"type":"room.message","payload":{"room":"r","seq":4,"from":"b","body":4}}`,
		`{"type":"room.message","payload":{"room":"r","seq":5,"from":"b","body":5}}`,
		`{"type":"room.message","payload":{"room":"r","seq":6,"from":"b","body":6}}`)
	for want := uint64(4); want <= 6; want++ {
		if got := recv(t, msgs, "a message"); got != want {
			t.Fatalf("after the resume: seq %d, want %d (each message once, in order)", got, want)
		}
	}
	if r := recv(t, recovers, "recover"); r != (Recover{Recovered: true, Since: 3, Seq: 5}) {
		t.Fatalf("recover %+v", r)
	}
	select {
	case s := <-msgs:
		t.Fatalf("extra message %d", s)
	case <-time.After(50 * time.Millisecond):
	}
}

// A path that stops answering is noticed by the heartbeat, and the client
// connects again.
func TestHeartbeatDropsADeadConnection(t *testing.T) {
	fs := newFakeServer(t, false)
	statuses := make(chan Status, 16)
	c := dialFake(t, fs, &Options{
		PingInterval: 20 * time.Millisecond, PongTimeout: 100 * time.Millisecond,
		MinDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond,
		OnStatus: func(s Status) { statuses <- s },
	})
	_ = c
	fc := fs.accept(t)
	ping := fc.expect("ping")
	fc.send(`{"type":"pong","id":` + string(ping.ID) + `,"payload":{}}`)
	// Answered: the connection stays. Now the server goes silent.
	for {
		s := recv(t, statuses, "a status")
		if s.State == Connected {
			continue
		}
		if s.State != Disconnected || s.Err != ErrPongTimeout {
			t.Fatalf("status %+v, want disconnected by the pong timeout", s)
		}
		break
	}
	fs.accept(t)
	if s := recv(t, statuses, "a status"); s.State != Connected || !s.Reconnected {
		t.Fatalf("status %+v, want reconnected", s)
	}
}

// TestHeartbeatWaitsWhileMessagesArrive checks that a pong late behind
// other messages (a slow link, where the pong queues behind them) does not
// drop a connection over which messages keep arriving, and that the same
// connection is dropped once they stop and no pong comes.
func TestHeartbeatWaitsWhileMessagesArrive(t *testing.T) {
	const pongTimeout = 100 * time.Millisecond
	fs := newFakeServer(t, false)
	statuses := make(chan Status, 16)
	dialFake(t, fs, &Options{
		PingInterval: 20 * time.Millisecond, PongTimeout: pongTimeout,
		MinDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond,
		OnStatus: func(s Status) { statuses <- s },
	})
	fc := fs.accept(t)
	fc.expect("ping")
	// Messages for five pong timeouts, and no pong.
	deadline := time.Now().Add(5 * pongTimeout)
	for time.Now().Before(deadline) {
		fc.send(`{"type":"tick","payload":{}}`)
		time.Sleep(pongTimeout / 5)
	}
	if s := recv(t, statuses, "a status"); s.State != Connected {
		t.Fatalf("status %+v, want connected", s)
	}
	select {
	case s := <-statuses:
		t.Fatalf("status %+v while messages kept arriving, want none", s)
	default:
	}
	if s := recv(t, statuses, "a status"); s.State != Disconnected || s.Err != ErrPongTimeout {
		t.Fatalf("status %+v once the server went silent, want disconnected by the pong timeout", s)
	}
}

func TestBackoffGrowsToTheCapWithFullJitter(t *testing.T) {
	one := func() float64 { return 0.999999 }
	zero := func() float64 { return 0 }
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		if got := backoff(attempt, 100*time.Millisecond, time.Second, one); got > want || got < want*99/100 {
			t.Errorf("attempt %d: %v, want about %v", attempt, got, want)
		}
		if got := backoff(attempt, 100*time.Millisecond, time.Second, zero); got != 0 {
			t.Errorf("attempt %d with no jitter left: %v, want 0", attempt, got)
		}
	}
	if got := backoff(1000, 100*time.Millisecond, time.Second, one); got > time.Second {
		t.Errorf("a long run of failures waits %v, more than the cap", got)
	}
}
