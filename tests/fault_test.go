package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/typed"
)

// The fault-injection suite: some fifty clients do random legal and
// illegal things to one server at once for a bounded time, every choice
// drawn from a seeded source, and then the server's guarantees are checked
// against everything every client received.
//
// Replay a failure with the seed it prints:
//
//	TROUPE_FAULT_SEED=<seed> go test -race -count=1 -run Fault ./tests/
//
// The timing of the clients is not replayed (they run in parallel), but
// what each of them does, in which order, is.

const (
	// faultSeedEnv names the variable that sets the seed.
	faultSeedEnv = "TROUPE_FAULT_SEED"
	// faultDefaultSeed is the seed when the variable is unset.
	faultDefaultSeed = 20260314

	// The cast: workers speak the protocol (legal and illegal requests,
	// reconnects, hostile frames through the WebSocket library), raw
	// attackers write hand-built frames on TCP, stallers join a room and
	// never read.
	faultWorkers  = 40
	faultRaw      = 6
	faultStallers = 4
	faultRooms    = 4

	// Each worker and raw attacker stops after this many operations or
	// when the chaos time is up, whichever comes first.
	faultMaxOps    = 250
	faultRawMaxOps = 40
	faultChaos     = 3 * time.Second
	// faultShutdownChaos is the chaos time of the shutdown run; the
	// Shutdown comes at a random moment in its middle.
	faultShutdownChaos = 2 * time.Second
	// faultShutdownWait is the ctx Shutdown gets.
	faultShutdownWait = 3 * time.Second

	// Server limits, small so that the hostile cases are cheap: an
	// oversized message is 8 KiB, a staller's queue overflows after 128
	// messages, and a staller's stuck write is cut after a second.
	faultMaxMessageSize = 8 << 10
	faultMaxQueued      = 128
	faultWriteTimeout   = time.Second

	// faultGoroutineSlack is how many goroutines above the level before
	// the server started are tolerated afterwards (timers and pools the
	// runtime may keep); a leak per session or room would leave hundreds.
	faultGoroutineSlack = 5
	// faultHeapSlack bounds the in-use heap, once every client has gone
	// and the server is idle, above its level before the server started.
	// What legitimately stays: each room's history (at most 4 rooms of at
	// most 1000 messages of a few hundred bytes: about 1.5 MiB), the actor
	// library's process registry (32768 small maps, about 300 bytes each
	// for every map an actor ID has landed in: at most about 10 MiB) and
	// pools. A session leaked per connection (the run opens some 500)
	// costs several KiB each on top, and a leaked queue much more.
	faultHeapSlack = 24 << 20
	// faultHeapPeak bounds the in-use heap sampled during the run (the
	// test's own clients and everything they received included). The run
	// moves a few tens of MiB; a queue that grew without bound (a
	// staller's outbound queue not capped, say) would pass this.
	faultHeapPeak = 256 << 20
)

// faultBoom is the message that makes the room logic panic.
const faultBoom = "fault-boom"

// faultRoomLogic is every room's logic: it panics on faultBoom and answers
// any other message delivered to the room with a broadcast.
type faultRoomLogic struct{ troupe.NopRoomHandler }

func (faultRoomLogic) OnMessage(r *troupe.Room, _ *troupe.Session, msg any) {
	if msg == faultBoom {
		panic(faultBoom)
	}
	_ = r.Broadcast("app.poked", map[string]string{"room": r.Name()})
}

type faultEcho struct {
	N int    `json:"n"`
	S string `json:"s"`
}

type faultPoke struct {
	Room string `json:"room"`
	Boom bool   `json:"boom"`
}

type faultJoin struct {
	Room  string  `json:"room"`
	Since *uint64 `json:"since,omitempty"`
	Epoch string  `json:"epoch,omitempty"`
	Meta  any     `json:"meta,omitempty"`
}

type faultPublish struct {
	Room string          `json:"room"`
	Body json.RawMessage `json:"body"`
}

type faultHistory struct {
	Room   string `json:"room"`
	Before uint64 `json:"before,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

// faultSession is what the server's hooks said about one session.
type faultSession struct {
	name         string
	opens        int
	closes       int
	code         int
	reason       string
	slow         bool // OnError got ErrSlowConsumer
	writeTimeout bool // OnError got a write that timed out
}

// faultRun is one server and its clients.
type faultRun struct {
	t           *testing.T
	seed        uint64
	shutdownRun bool
	srv         *troupe.Server
	ts          *httptest.Server
	url, addr   string
	rooms       []string

	failures atomic.Int32
	booms    atomic.Int64 // boom messages the room accepted

	mu         sync.Mutex
	sessions   map[string]*faultSession // by session ID
	byName     map[string]string        // client name -> session ID
	strayClose []string                 // OnClose for sessions that never opened
	unexpected []string                 // OnError calls of no expected class
	panics     int                      // room panics OnError heard of
	slow       int
	timeouts   int

	shutdownStarted atomic.Bool
	shutdownTook    time.Duration
	shutdownErr     error
	shutdownLeft    []string // the sessions open when Shutdown's ctx ended
	stallersLeft    []string // stallers the server had not dropped as it should by the end
	shutdownAt      time.Time
	lastClose       time.Time

	workers  []*fworker
	stallers []*websocket.Conn
	fence    *fconn
	rawCases sync.Map // case name -> *atomic.Int64
}

// errorf reports a failure with the seed (the first 40; the rest are
// counted).
func (f *faultRun) errorf(format string, args ...any) {
	if n := f.failures.Add(1); n <= 40 {
		f.t.Errorf("seed %d: "+format, append([]any{f.seed}, args...)...)
	} else if n == 41 {
		f.t.Errorf("seed %d: more failures, not shown", f.seed)
	}
}

// faultSeed returns the seed from TROUPE_FAULT_SEED, or the default.
func faultSeed(t *testing.T) uint64 {
	v := os.Getenv(faultSeedEnv)
	if v == "" {
		return faultDefaultSeed
	}
	seed, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", faultSeedEnv, v, err)
	}
	return seed
}

// TestFaultInjection runs the suite twice: once to the end with checks of
// every delivery ("Chaos"), once with a server Shutdown at a random moment
// ("Shutdown").
//
// For a bounded time (faultChaos) and number of operations, 40 workers
// each draw from faultOps: room.join (fresh, and again with since and
// epoch on the same connection), room.leave, room.publish with and without
// an id, room.history pages, typed requests to app.echo, pings, messages
// delivered to the room logic (some of which make it panic); and malformed
// JSON, unknown types, invalid payloads, oversized meta, binary frames,
// messages one byte over MaxMessageSize, text that is not UTF-8, normal
// closes, dropped connections, TCP resets and half-closes, each followed by
// a reconnect that resumes every room with since and the epoch (one time
// in five a wrong epoch). Six raw attackers write hand-built frames (RSV
// bits, orphan or interleaved continuations, unmasked or fragmented control
// frames, bad close codes, oversized frames, frames broken off by a reset
// or a FIN, half-closes). Four stallers join every room and never read.
//
// Then, after a fence (a last publish to every room, and a room panic that
// OnError must hear of), it checks:
//   - every room.publish acknowledged to its publisher is the message of
//     that seq (its body, from the publisher), came to the publisher before
//     its room.published, and reached every member that was in the room
//     from before that seq to the end;
//   - each membership's room.message stream is the room's sequence without
//     a gap or repeat from where it joined (room.joined's seq, or since for
//     a resume that said recovered: true) to where it ended; recovered is
//     false where it must be (another epoch, a seq the room has not
//     reached) and true where the history had everything; nothing arrives
//     for a room after room.left; a repeated join's seq is where the
//     member's stream was;
//   - one seq is one message: every member and every history page has the
//     same bytes for it; history pages are ascending, below before, within
//     limit;
//   - every request with an id gets one answer of the right kind; bad input
//     gets its error code, or its close code (1009, 1007, 1002);
//   - OnOpen and OnClose exactly once for every session; OnError only for
//     the room panics provoked (no more than the boom messages delivered),
//     slow consumers and write timeouts; every staller dropped;
//   - the goroutine count back to its level before the server started, the
//     in-use heap within faultHeapSlack of it once every client has gone,
//     and its peak during the run under faultHeapPeak.
//
// In the Shutdown run the deliveries are checked up to each connection's
// end, clients that read must be closed with 1001, and Shutdown must not
// wait for them past its ctx.
func TestFaultInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection: skipped with -short")
	}
	seed := faultSeed(t)
	t.Logf("fault seed %d (replay: %s=%d go test -race -count=1 -run Fault ./tests/)", seed, faultSeedEnv, seed)
	t.Run("Chaos", func(t *testing.T) { runFault(t, seed, false) })
	t.Run("Shutdown", func(t *testing.T) { runFault(t, seed, true) })
}

func runFault(t *testing.T, seed uint64, shutdownRun bool) {
	runtime.GC()
	baseG := runtime.NumGoroutine()
	baseHeap := faultHeapInuse()

	f := startFault(t, seed, shutdownRun)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("failed with seed %d: replay with %s=%d", seed, faultSeedEnv, seed)
		}
	})
	master := rand.New(rand.NewPCG(seed, 0))
	chaos := faultChaos
	if shutdownRun {
		chaos = faultShutdownChaos
	}

	// The peak heap, sampled while the clients run.
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for {
			if h := faultHeapInuse(); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	for i := range faultStallers {
		f.staller(i)
	}
	for i := range faultWorkers {
		f.workers = append(f.workers, &fworker{
			f: f, idx: i, rng: rand.New(rand.NewPCG(seed, uint64(1000+i))),
			ndjson: i%3 == 0, member: map[string]bool{},
		})
	}
	start := time.Now()
	deadline := start.Add(chaos)
	var wg sync.WaitGroup
	for _, w := range f.workers {
		wg.Go(func() { w.run(deadline) })
	}
	for i := range faultRaw {
		rng := rand.New(rand.NewPCG(seed, uint64(2000+i)))
		wg.Go(func() { f.rawAttacker(i, rng, deadline) })
	}
	var shutdownDone chan struct{}
	if shutdownRun {
		at := time.Duration((0.2 + 0.6*master.Float64()) * float64(chaos))
		t.Logf("Shutdown %v into the run", at.Round(time.Millisecond))
		shutdownDone = make(chan struct{})
		go func() {
			defer close(shutdownDone)
			time.Sleep(time.Until(start.Add(at)))
			f.shutdownStarted.Store(true)
			ctx, cancel := context.WithTimeout(context.Background(), faultShutdownWait)
			defer cancel()
			t0 := time.Now()
			f.mu.Lock()
			f.shutdownAt = t0
			f.mu.Unlock()
			// The sessions still open when ctx ends.
			var left []string
			snap := make(chan struct{})
			go func() {
				defer close(snap)
				<-ctx.Done()
				for _, s := range f.srv.Sessions() {
					left = append(left, s.Header().Get(clientHeader))
				}
				sort.Strings(left)
			}()
			err := f.srv.Shutdown(ctx)
			cancel()
			<-snap
			if err == nil {
				left = nil
			}
			f.mu.Lock()
			f.shutdownTook, f.shutdownErr, f.shutdownLeft = time.Since(t0), err, left
			f.mu.Unlock()
		}()
	}
	wg.Wait()
	if shutdownDone != nil {
		<-shutdownDone
		f.mu.Lock()
		took, err, left := f.shutdownTook, f.shutdownErr, f.shutdownLeft
		lastClose := f.lastClose.Sub(f.shutdownAt)
		f.mu.Unlock()
		t.Logf("Shutdown returned after %v: %v (sessions left then: %v); the last OnClose came %v after it began",
			took.Round(time.Millisecond), err, left, lastClose.Round(time.Millisecond))
		// Shutdown waits for each client to answer its close frame. A
		// staller never reads it, and a raw attacker may be busy breaking
		// a frame: the server may wait for those until ctx ends (then it
		// drops them). A client that reads answers at once.
		if took > faultShutdownWait+time.Second {
			// Sessions that never answer their close frame must be
			// dropped when ctx ends (TestFaultBugDropWaitsForCloseHandshake).
			f.errorf("Shutdown with a %v ctx returned after %v, not at once when ctx ended", faultShutdownWait, took)
		}
		for _, name := range left {
			if !strings.HasPrefix(name, "fault-stall-") && !strings.HasPrefix(name, "fault-raw") {
				f.errorf("Shutdown: %v after %v with %s, a client that reads, still open", err, took, name)
			}
		}
	}
	t.Logf("chaos ran %v", time.Since(start).Round(time.Millisecond))

	var fence map[string]uint64
	if !shutdownRun {
		fence = f.fenceAndCatchUp()
	}
	conns := f.closeAll()
	f.waitSessionsClosed()
	close(stopSampling)
	<-sampled

	f.analyze(conns, fence)
	f.checkHooks()
	f.logStats(conns)

	// Heap: measured with every client gone and the server idle (before
	// Close, so that what it keeps while running counts).
	f.workers, f.fence, f.stallers = nil, nil, nil
	conns = nil
	heap := faultHeapInuse()
	for end := time.Now().Add(waitTimeout); heap > baseHeap+faultHeapSlack && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
		heap = faultHeapInuse()
	}
	t.Logf("heap in use: %.1f MiB before, %.1f MiB peak, %.1f MiB after", mib(baseHeap), mib(peak.Load()), mib(heap))
	if heap > baseHeap+faultHeapSlack {
		f.errorf("heap in use %.1f MiB after the run, %.1f MiB before: over the %.0f MiB allowed", mib(heap), mib(baseHeap), mib(faultHeapSlack))
	}
	if p := peak.Load(); p > faultHeapPeak {
		f.errorf("heap in use peaked at %.1f MiB, over the %.0f MiB bound", mib(p), mib(faultHeapPeak))
	}

	_ = f.srv.Close()
	f.ts.Close()
	g := runtime.NumGoroutine()
	for end := time.Now().Add(waitTimeout); g > baseG+faultGoroutineSlack && time.Now().Before(end); g = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	if g > baseG+faultGoroutineSlack {
		buf := make([]byte, 1<<20)
		f.errorf("%d goroutines after the run, %d before:\n%s", g, baseG, buf[:runtime.Stack(buf, true)])
	}
}

func faultHeapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// startFault starts the server: the room protocol, a room logic that
// panics on faultBoom, two application handlers, and hooks that count
// opens, closes and errors per session.
func startFault(t *testing.T, seed uint64, shutdownRun bool) *faultRun {
	f := &faultRun{
		t: t, seed: seed, shutdownRun: shutdownRun,
		sessions: map[string]*faultSession{}, byName: map[string]string{},
	}
	for i := range faultRooms {
		f.rooms = append(f.rooms, fmt.Sprintf("fault-%d", i))
	}
	cfg := troupe.Config{
		Settings: troupe.Settings{
			RateLimit:         -1,
			MaxMessageSize:    faultMaxMessageSize,
			MaxQueuedMessages: faultMaxQueued,
			WriteTimeout:      faultWriteTimeout,
		},
		RoomProtocol:   true,
		NewRoomHandler: func(string) troupe.RoomHandler { return faultRoomLogic{} },
		// The chaos panics room logic often; it checks what a restart
		// keeps, so the rooms are restarted however often they fail.
		MaxRoomRestarts: -1,
		OnOpen: func(s *troupe.Session) {
			f.mu.Lock()
			defer f.mu.Unlock()
			fs := f.sessions[s.ID()]
			if fs == nil {
				fs = &faultSession{name: s.Header().Get(clientHeader)}
				f.sessions[s.ID()] = fs
			}
			fs.opens++
			f.byName[fs.name] = s.ID()
		},
		OnClose: func(s *troupe.Session, code int, reason string) {
			f.mu.Lock()
			defer f.mu.Unlock()
			fs := f.sessions[s.ID()]
			if fs == nil {
				f.strayClose = append(f.strayClose, fmt.Sprintf("%s (%s) %d %q", s.ID(), s.Header().Get(clientHeader), code, reason))
				return
			}
			fs.closes++
			fs.code, fs.reason = code, reason
			f.lastClose = time.Now()
		},
		OnError: func(s *troupe.Session, err error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			var pe *troupe.PanicError
			var fs *faultSession
			name := "server"
			if s != nil {
				fs = f.sessions[s.ID()]
				name = s.Header().Get(clientHeader)
			}
			switch {
			case s == nil && errors.As(err, &pe) && pe.Type == "" && slices.Contains(f.rooms, pe.Room) && pe.Value == faultBoom:
				f.panics++
			case fs != nil && errors.Is(err, troupe.ErrSlowConsumer):
				f.slow++
				fs.slow = true
			case fs != nil && errors.Is(err, os.ErrDeadlineExceeded):
				f.timeouts++
				fs.writeTimeout = true
			default:
				f.unexpected = append(f.unexpected, fmt.Sprintf("%s: %v (%T)", name, err, err))
			}
		},
	}
	srv, err := troupe.New(cfg)
	if err != nil {
		t.Fatalf("troupe.New: %v", err)
	}
	troupe.HandleRequest(srv, "app.echo", func(_ *troupe.Context, m faultEcho) (faultEcho, error) { return m, nil })
	troupe.Handle(srv, "app.poke", func(c *troupe.Context, m faultPoke) error {
		msg := "poke"
		if m.Boom {
			msg = faultBoom
		}
		err := c.Server().DeliverToRoom(m.Room, c.Session(), msg)
		if err == nil && m.Boom {
			f.booms.Add(1)
		}
		return err
	})
	ts := httptest.NewUnstartedServer(srv)
	smallSendBuffers()(ts)
	ts.Start()
	t.Cleanup(func() {
		_ = srv.Close()
		ts.Close()
	})
	f.srv, f.ts = srv, ts
	f.addr = ts.Listener.Addr().String()
	f.url = "ws://" + f.addr
	return f
}

// sessionOf waits for OnOpen of the client named name, connected on c,
// and returns its session ID.
func (f *faultRun) sessionOf(name string, c *fconn) string {
	deadline := time.Now().Add(waitTimeout)
	for {
		f.mu.Lock()
		id := f.byName[name]
		f.mu.Unlock()
		if id != "" {
			return id
		}
		if f.shutdownStarted.Load() && c.isEnded() {
			// Shutdown overtook the handshake: the session is closed
			// without OnOpen (see TestFaultBugOnCloseWithoutOnOpen).
			return ""
		}
		if time.Now().After(deadline) {
			f.errorf("%s: connected, but OnOpen did not run within %v", name, waitTimeout)
			return ""
		}
		time.Sleep(time.Millisecond)
	}
}

// fworker is a client that speaks the protocol, legally and not, and
// reconnects when its connection ends.
type fworker struct {
	f      *faultRun
	idx    int
	rng    *rand.Rand
	ndjson bool

	c      *fconn
	conns  []*fconn
	nconn  int
	nid    int
	npub   int
	member map[string]bool // the rooms its current connection is in
}

// faultOp is one thing a worker may do; weight is its share of the draws.
type faultOp struct {
	name   string
	weight int
	do     func(w *fworker)
}

var faultOps = []faultOp{
	// Legal.
	{"publish", 30, (*fworker).publish},
	{"publish-no-id", 4, (*fworker).publishNoID},
	{"join", 8, (*fworker).join},
	{"join-since", 3, (*fworker).joinSince},
	{"leave", 6, (*fworker).leave},
	{"history", 6, (*fworker).history},
	{"echo", 5, (*fworker).echo},
	{"ping", 4, (*fworker).ping},
	{"poke", 2, func(w *fworker) { w.poke(false) }},
	{"boom", 2, func(w *fworker) { w.poke(true) }},
	{"nap", 3, func(w *fworker) { time.Sleep(time.Duration(w.rng.IntN(3000)) * time.Microsecond) }},
	{"reconnect", 3, func(w *fworker) { w.reconnect("close") }},
	// Illegal or hostile.
	{"malformed-json", 2, func(w *fworker) {
		w.idLess(websocket.MessageText, []byte(`{"type":"room.publish","payload":`), typed.CodeBadRequest)
	}},
	{"binary", 2, func(w *fworker) {
		w.idLess(websocket.MessageBinary, []byte(`{"type":"ping"}`), "unsupported")
	}},
	{"unknown-type", 2, func(w *fworker) {
		w.expectErr("no.such.type", map[string]int{"x": 1}, typed.CodeUnknownType)
	}},
	{"invalid-payload", 2, func(w *fworker) {
		w.expectErr("room.publish", map[string]any{"room": 5, "body": []int{}}, typed.CodeInvalidPayload)
	}},
	{"invalid-echo", 1, func(w *fworker) {
		w.expectErr("app.echo", map[string]string{"n": "x"}, typed.CodeInvalidPayload)
	}},
	{"drop", 2, func(w *fworker) { w.reconnect("abrupt") }},
	{"reset", 1, func(w *fworker) { w.reconnect("reset") }},
	{"half-close", 1, func(w *fworker) { w.reconnect("halfclose") }},
	{"oversize", 1, (*fworker).oversize},
	{"bad-utf8", 1, (*fworker).badUTF8},
}

var faultOpsTotal = func() int {
	n := 0
	for _, op := range faultOps {
		n += op.weight
	}
	return n
}()

func (w *fworker) run(deadline time.Time) {
	for op := 0; op < faultMaxOps && time.Now().Before(deadline); op++ {
		if w.f.shutdownStarted.Load() && (w.c == nil || w.c.isEnded()) {
			return
		}
		if w.c == nil || w.c.isEnded() {
			if !w.reconnect("") {
				return
			}
			continue
		}
		n := w.rng.IntN(faultOpsTotal)
		for _, o := range faultOps {
			if n < o.weight {
				o.do(w)
				break
			}
			n -= o.weight
		}
	}
}

// pickRoom returns one of the rooms the worker is in with probability
// inRoom (if it is in any), else any room.
func (w *fworker) pickRoom(inRoom float64) string {
	if len(w.member) > 0 && w.rng.Float64() < inRoom {
		mine := make([]string, 0, len(w.member))
		for r := range w.member {
			mine = append(mine, r)
		}
		sort.Strings(mine)
		return mine[w.rng.IntN(len(mine))]
	}
	return w.f.rooms[w.rng.IntN(len(w.f.rooms))]
}

// post sends a request with a fresh id and returns the id ("" if the
// connection is gone).
func (w *fworker) post(typ string, payload any, r freq) string {
	w.nid++
	id := fmt.Sprintf(`"w%d-%d"`, w.idx, w.nid)
	r.typ = typ
	w.c.reqs[id] = r
	if err := w.c.write(websocket.MessageText, faultEnvelope(typ, id, payload)); err != nil {
		return ""
	}
	return id
}

func (w *fworker) request(typ string, payload any, r freq) (envelope, bool) {
	id := w.post(typ, payload, r)
	if id == "" {
		return envelope{}, false
	}
	return w.c.await(w.f, id)
}

func errCode(e envelope) string {
	if e.Type != "error" {
		return ""
	}
	var p errorPayload
	_ = json.Unmarshal(e.Payload, &p)
	return p.Code
}

func (w *fworker) publish() {
	room := w.pickRoom(0.85)
	w.npub++
	body := fmt.Sprintf(`{"w":%d,"c":%d,"n":%d,"pad":%q}`, w.idx, w.nconn, w.npub, strings.Repeat("x", w.rng.IntN(200)))
	e, ok := w.request("room.publish", faultPublish{Room: room, Body: json.RawMessage(body)}, freq{room: room, body: body})
	if !ok {
		return
	}
	switch {
	case e.Type == "room.published" && w.member[room]:
	case errCode(e) == "not_member" && !w.member[room]:
	default:
		w.f.errorf("%s: publish to %s (member: %v) answered %s %.200s", w.c.name, room, w.member[room], e.Type, e.Payload)
	}
}

func (w *fworker) publishNoID() {
	if len(w.member) == 0 {
		return
	}
	room := w.pickRoom(1)
	w.npub++
	body := fmt.Sprintf(`{"w":%d,"c":%d,"n":%d}`, w.idx, w.nconn, w.npub)
	_ = w.c.write(websocket.MessageText, faultEnvelope("room.publish", "", faultPublish{Room: room, Body: json.RawMessage(body)}))
}

func (w *fworker) join() {
	room := w.pickRoom(0.2)
	var meta any
	oversize := false
	switch w.rng.IntN(6) {
	case 0:
		meta = map[string]int{"w": w.idx}
	case 1:
		meta = map[string]string{"blob": strings.Repeat("m", 1100)} // over MaxMetaBytes
		oversize = true
	}
	e, ok := w.request("room.join", faultJoin{Room: room, Meta: meta}, freq{room: room})
	if !ok {
		return
	}
	switch {
	case oversize && errCode(e) == typed.CodeInvalidPayload:
	case !oversize && e.Type == "room.joined":
		w.member[room] = true
	default:
		w.f.errorf("%s: join of %s (oversized meta: %v) answered %s %.200s", w.c.name, room, oversize, e.Type, e.Payload)
	}
}

// joinSince joins a room the connection is in again with since a little
// behind what it has: a resume on the same connection, which replays the
// messages after since (all still in the history).
func (w *fworker) joinSince() {
	if len(w.member) == 0 {
		return
	}
	room := w.pickRoom(1)
	w.c.pull(w.f)
	last := w.c.lastSeq[room]
	since := last - uint64(w.rng.IntN(int(min(last, 30))+1))
	epoch := w.c.epoch[room]
	want := true
	switch w.rng.IntN(4) {
	case 0: // an epoch of another incarnation of the room
		epoch, want = "x"+epoch, false
	case 1: // a seq the room has not reached
		since, want = last+100000, false
	}
	e, ok := w.request("room.join", faultJoin{Room: room, Since: &since, Epoch: epoch}, freq{room: room, since: &since, epoch: epoch, wantRecovered: &want})
	if ok && e.Type != "room.joined" {
		w.f.errorf("%s: repeated join of %s since %d answered %s %.200s", w.c.name, room, since, e.Type, e.Payload)
	}
}

func (w *fworker) leave() {
	room := w.pickRoom(0.7)
	e, ok := w.request("room.leave", roomName{Room: room}, freq{room: room})
	if !ok {
		return
	}
	switch {
	case e.Type == "room.left" && w.member[room]:
		delete(w.member, room)
	case errCode(e) == "not_member" && !w.member[room]:
	default:
		w.f.errorf("%s: leave of %s (member: %v) answered %s %.200s", w.c.name, room, w.member[room], e.Type, e.Payload)
	}
}

func (w *fworker) history() {
	room := w.pickRoom(0.9)
	w.c.pull(w.f)
	var before uint64
	if w.rng.IntN(2) == 0 {
		before = uint64(w.rng.IntN(int(w.c.lastSeq[room]) + 5))
	}
	limit := w.rng.IntN(101)
	e, ok := w.request("room.history", faultHistory{Room: room, Before: before, Limit: limit}, freq{room: room, before: before, limit: limit})
	if !ok {
		return
	}
	switch {
	case e.Type == "room.history" && w.member[room]:
	case errCode(e) == "not_member" && !w.member[room]:
	default:
		w.f.errorf("%s: history of %s (member: %v) answered %s %.200s", w.c.name, room, w.member[room], e.Type, e.Payload)
	}
}

func (w *fworker) echo() {
	m := faultEcho{N: w.rng.IntN(1 << 20), S: strings.Repeat("e", w.rng.IntN(50))}
	e, ok := w.request("app.echo", m, freq{})
	if !ok {
		return
	}
	var got faultEcho
	if e.Type != "reply" || json.Unmarshal(e.Payload, &got) != nil || got != m {
		w.f.errorf("%s: app.echo %+v answered %s %.200s", w.c.name, m, e.Type, e.Payload)
	}
}

func (w *fworker) ping() {
	p := map[string]int{"k": w.rng.IntN(1 << 20)}
	e, ok := w.request("ping", p, freq{})
	if !ok {
		return
	}
	want, _ := json.Marshal(p)
	if e.Type != "pong" || !jsonEqual(e.Payload, want) {
		w.f.errorf("%s: ping %s answered %s %.200s", w.c.name, want, e.Type, e.Payload)
	}
}

func (w *fworker) poke(boom bool) {
	room := w.pickRoom(0.5)
	e, ok := w.request("app.poke", faultPoke{Room: room, Boom: boom}, freq{room: room})
	if !ok {
		return
	}
	// The room may have no members (handler_error: no such room).
	if e.Type != "reply" && errCode(e) != typed.CodeHandlerError {
		w.f.errorf("%s: app.poke %s (boom: %v) answered %s %.200s", w.c.name, room, boom, e.Type, e.Payload)
	}
}

// expectErr sends a request that must be refused with code.
func (w *fworker) expectErr(typ string, payload any, code string) {
	e, ok := w.request(typ, payload, freq{})
	if ok && errCode(e) != code {
		w.f.errorf("%s: %s %v answered %s %.200s, want error %s", w.c.name, typ, payload, e.Type, e.Payload, code)
	}
}

// idLess sends a bad message that cannot carry an id, then a ping: exactly
// one error with code, without an id, must come between.
func (w *fworker) idLess(typ websocket.MessageType, data []byte, code string) {
	w.c.pull(w.f)
	from := len(w.c.msgs)
	if w.c.write(typ, data) != nil {
		return
	}
	id := w.post("ping", nil, freq{})
	if id == "" {
		return
	}
	if _, ok := w.c.await(w.f, id); !ok {
		return
	}
	n := 0
	for _, m := range w.c.msgs[from:w.c.answers[id]] {
		if m.env.Type == "error" && (len(m.env.ID) == 0 || string(m.env.ID) == "null") && errCode(m.env) == code {
			n++
		}
	}
	if n != 1 {
		w.f.errorf("%s: %d errors %q without an id answered %.60q, want 1", w.c.name, n, code, data)
	}
}

// oversize sends a message one byte over MaxMessageSize: the connection
// must be closed with 1009.
func (w *fworker) oversize() {
	head, tail := `{"type":"ping","payload":"`, `"}`
	msg := head + strings.Repeat("o", faultMaxMessageSize+1-len(head)-len(tail)) + tail
	_ = w.c.write(websocket.MessageText, []byte(msg)) // the server may cut in
	w.reconnect("oversize")
}

// badUTF8 sends a text message that is not UTF-8: the connection must be
// closed with 1007, and the message not answered.
func (w *fworker) badUTF8() {
	w.nid++
	id := fmt.Sprintf(`"w%d-%d"`, w.idx, w.nid)
	w.c.reqs[id] = freq{typ: "bad-utf8"}
	_ = w.c.write(websocket.MessageText, []byte(`{"type":"ping","id":`+id+`,"payload":"`+"\xff\xfe"+`"}`))
	c := w.c
	w.reconnect("utf8")
	if i, ok := c.answers[id]; ok {
		w.f.errorf("%s: text that is not UTF-8 was answered %s %.200s; want the connection failed (1007)", c.name, c.msgs[i].env.Type, c.msgs[i].env.Payload)
	}
}

// end ends the current connection the way mode says, and waits until the
// server has let go of it.
func (w *fworker) end(mode string) {
	c := w.c
	c.ended = mode
	switch mode {
	case "close":
		_ = c.ws.Close(websocket.StatusNormalClosure, "bye")
	case "abrupt":
		_ = c.ws.CloseNow()
	case "reset":
		if tc, ok := c.raw.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.ws.CloseNow()
	case "halfclose":
		if tc, ok := c.raw.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	if !c.waitEnd(waitTimeout) {
		w.f.errorf("%s: connection still open %v after the client's %s", c.name, waitTimeout, mode)
		_ = c.ws.CloseNow()
		c.waitEnd(waitTimeout)
	}
	c.pull(w.f)
	want := map[string]int{"oversize": int(troupe.CloseMessageTooBig), "utf8": int(troupe.CloseInvalidData)}[mode]
	if code, reason := c.closeStatus(); want != 0 && code != want && !w.f.shutdownStarted.Load() {
		w.f.errorf("%s: after the client's %s the connection ended with %d (%s), want %d", c.name, mode, code, reason, want)
	}
}

// reconnect ends the current connection (mode "" if it has ended already),
// opens a new one and joins the rooms the old one was in again, with since
// the last seq it received there and the epoch it had (or, one time in
// five, another epoch: then recovered must be false). It returns false if
// no connection could be made.
func (w *fworker) reconnect(mode string) bool {
	var rooms []string
	last, epochs := map[string]uint64{}, map[string]string{}
	if old := w.c; old != nil {
		if mode != "" {
			w.end(mode)
		} else if !old.waitEnd(waitTimeout) {
			w.f.errorf("%s: read loop did not end", old.name)
		}
		old.pull(w.f)
		for r := range w.member {
			rooms = append(rooms, r)
			last[r], epochs[r] = old.lastSeq[r], old.epoch[r]
		}
		sort.Strings(rooms)
	}
	w.member = map[string]bool{}
	w.nconn++
	name := fmt.Sprintf("fault-w%d-c%d", w.idx, w.nconn)
	c, err := w.f.dialFault(name, w.ndjson, 0)
	if err != nil {
		if !w.f.shutdownStarted.Load() {
			w.f.errorf("%v", err)
		}
		w.c = nil
		return false
	}
	w.c = c
	w.conns = append(w.conns, c)
	for _, r := range rooms {
		since, epoch, want := last[r], epochs[r], true
		if w.rng.IntN(5) == 0 {
			epoch, want = "x"+epoch, false
		}
		e, ok := w.request("room.join", faultJoin{Room: r, Since: &since, Epoch: epoch}, freq{room: r, since: &since, epoch: epoch, wantRecovered: &want})
		if !ok {
			return true
		}
		if e.Type != "room.joined" {
			w.f.errorf("%s: resume of %s since %d answered %s %.200s", c.name, r, since, e.Type, e.Payload)
			continue
		}
		w.member[r] = true
	}
	return true
}

// staller joins every room and never reads again. Its kernel receive buffer is
// 4 KiB: the server's writes to it stall, its queue fills, and the server
// must drop it (1013, or 1006 once a write times out) without the room
// ever waiting for it.
func (f *faultRun) staller(i int) {
	name := fmt.Sprintf("fault-stall-%d", i)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, addr)
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10)
		}
		return nc, err
	}}
	defer tr.CloseIdleConnections()
	hdr := http.Header{}
	hdr.Set(clientHeader, name)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, f.url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: hdr})
	if err != nil {
		f.errorf("dial %s: %v", name, err)
		return
	}
	f.stallers = append(f.stallers, ws)
	for _, r := range f.rooms {
		if err := ws.Write(ctx, websocket.MessageText, faultEnvelope("room.join", `"s"`, faultJoin{Room: r})); err != nil {
			f.errorf("%s: write: %v", name, err)
			return
		}
	}
	// The reads before it stalls: its joins' answers (and whatever came
	// with them).
	for joined, n := 0, 0; joined < len(f.rooms); n++ {
		_, data, err := ws.Read(ctx)
		if err != nil || n > 100 {
			f.errorf("%s: joins answered %.200q, %v", name, data, err)
			return
		}
		if strings.Contains(string(data), `"room.joined"`) {
			joined++
		}
	}
}

// rawAttacker opens connections by hand and writes frames that break the
// protocol, or breaks off in the middle of one, until the time is up.
func (f *faultRun) rawAttacker(i int, rng *rand.Rand, deadline time.Time) {
	for n := 0; n < faultRawMaxOps && time.Now().Before(deadline) && !f.shutdownStarted.Load(); n++ {
		name := fmt.Sprintf("fault-raw%d-%d", i, n)
		nc, br, err := f.rawFaultDial(name, rng)
		if err != nil {
			if !f.shutdownStarted.Load() {
				f.errorf("raw dial %s: %v", name, err)
			}
			return
		}
		f.rawCase(name, nc, br, rng)
		_ = nc.Close()
	}
}

// rawCaseNames are the hand-built attacks.
var rawCaseNames = []string{
	"reserved-bits", "orphan-continuation", "interleaved-data", "unmasked",
	"fragmented-ping", "bad-close-code", "too-long", "half-frame-reset",
	"half-frame-fin", "half-close", "clean-close",
}

// rawCase runs one attack, drawn from rawCaseNames, on a connection that has
// done its handshake, and checks how the server ended it.
func (f *faultRun) rawCase(name string, nc net.Conn, br *bufio.Reader, rng *rand.Rand) {
	kind := rawCaseNames[rng.IntN(len(rawCaseNames))]
	v, _ := f.rawCases.LoadOrStore(kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	ping := []byte(`{"type":"ping","id":1}`)
	join := func() bool {
		room := f.rooms[rng.IntN(len(f.rooms))]
		req := faultEnvelope("room.join", `"raw"`, faultJoin{Room: room})
		_ = nc.SetWriteDeadline(time.Now().Add(waitTimeout))
		if _, err := nc.Write(rawFrame(0x81, req, false, 0, rng)); err != nil {
			return false
		}
		return rawAwait(nc, br, waitTimeout, `"room.joined"`)
	}
	// halfFrame announces a 4096-byte text frame and sends 100 bytes of it.
	halfFrame := func() []byte {
		return rawFrame(0x81, []byte(`{"type":"room.publish","payload":{"room":"x","body":"`+strings.Repeat("h", 46)), false, 4096, rng)[:8+100]
	}
	var out []byte
	want := int(websocket.StatusProtocolError)
	switch kind {
	case "reserved-bits": // RSV1 without an extension that defines it
		out = rawFrame(0x81|0x40, ping, false, 0, rng)
	case "orphan-continuation": // a continuation with no message to continue
		out = rawFrame(0x80, ping, false, 0, rng)
	case "interleaved-data": // a new message before the fragmented one ended
		out = append(rawFrame(0x01, ping[:8], false, 0, rng), rawFrame(0x81, ping, false, 0, rng)...)
	case "unmasked": // clients must mask
		out = rawFrame(0x81, ping, true, 0, rng)
	case "fragmented-ping": // control frames cannot be fragmented
		out = rawFrame(0x09, []byte("x"), false, 0, rng)
	case "bad-close-code": // 1005 must never be sent
		out = rawFrame(0x88, []byte{0x03, 0xed}, false, 0, rng)
	case "too-long": // one byte over MaxMessageSize
		out = rawFrame(0x81, []byte(strings.Repeat(" ", faultMaxMessageSize+1)), false, 0, rng)
		want = int(troupe.CloseMessageTooBig)
	case "clean-close": // a ping, then the closing handshake
		out = append(rawFrame(0x89, []byte("hi"), false, 0, rng), rawFrame(0x88, []byte{0x03, 0xe8}, false, 0, rng)...)
		want = int(websocket.StatusNormalClosure)
	case "half-frame-reset", "half-frame-fin":
		if !join() {
			return
		}
		_ = nc.SetWriteDeadline(time.Now().Add(waitTimeout))
		_, _ = nc.Write(halfFrame())
		if tc, ok := nc.(*net.TCPConn); ok && kind == "half-frame-reset" {
			_ = tc.SetLinger(0)
		}
		_ = nc.Close()
		return
	case "half-close":
		if !join() {
			return
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		if _, ended := rawReadUntilEnd(nc, br, waitTimeout, rng); !ended && !f.shutdownStarted.Load() {
			f.errorf("%s: the server kept a half-closed connection open for %v", name, waitTimeout)
		}
		return
	}
	_ = nc.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := nc.Write(out); err != nil && kind != "too-long" {
		return
	}
	code, ended := rawReadUntilEnd(nc, br, waitTimeout, rng)
	if f.shutdownStarted.Load() {
		return // 1001 may come first
	}
	if !ended {
		f.errorf("%s: %s: the server kept the connection open for %v", name, kind, waitTimeout)
	} else if code != want && !(kind == "unmasked" && code == -1) {
		// RFC 6455, section 5.1: a server that receives an unmasked
		// frame closes the connection and MAY send 1002 first;
		// coder/websocket just closes it.
		f.errorf("%s: %s: the server closed with %d, want %d", name, kind, code, want)
	}
}

// fenceAndCatchUp ends the run with a fence: a new client joins every
// room, makes one room's logic panic (OnError must hear of it), and
// publishes one message to each room; every connection still open must
// then receive every room's fence. Those connections' last memberships are
// the members that stayed to the end. It returns each room's fence seq.
func (f *faultRun) fenceAndCatchUp() map[string]uint64 {
	fence := map[string]uint64{}
	c, err := f.dialFault("fault-fence", false, 0)
	if err != nil {
		f.errorf("%v", err)
		return fence
	}
	f.fence = c
	nid := 0
	req := func(typ string, payload any, r freq) (envelope, bool) {
		nid++
		id := fmt.Sprintf(`"fence-%d"`, nid)
		r.typ = typ
		c.reqs[id] = r
		if err := c.write(websocket.MessageText, faultEnvelope(typ, id, payload)); err != nil {
			f.errorf("fence: write: %v", err)
			return envelope{}, false
		}
		e, ok := c.await(f, id)
		if !ok {
			f.errorf("fence: no answer to %s", typ)
		}
		return e, ok
	}
	for _, r := range f.rooms {
		if e, ok := req("room.join", faultJoin{Room: r}, freq{room: r}); ok && e.Type != "room.joined" {
			f.errorf("fence: join %s answered %s %.200s", r, e.Type, e.Payload)
		}
	}
	f.mu.Lock()
	panics := f.panics
	f.mu.Unlock()
	if e, ok := req("app.poke", faultPoke{Room: f.rooms[0], Boom: true}, freq{}); ok && e.Type != "reply" {
		f.errorf("fence: boom answered %s %.200s", e.Type, e.Payload)
	}
	eventuallyFault(f, "OnError to hear of the fence's room panic", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.panics > panics
	})
	for _, r := range f.rooms {
		body := fmt.Sprintf(`{"fence":%q}`, r)
		e, ok := req("room.publish", faultPublish{Room: r, Body: json.RawMessage(body)}, freq{room: r, body: body})
		if !ok {
			continue
		}
		if e.Type != "room.published" {
			f.errorf("fence: publish to %s answered %s %.200s", r, e.Type, e.Payload)
			continue
		}
		fence[r] = decodeFault[publishedPayload](f, e).Seq
	}

	// Every open connection catches up with the fence of each room it is
	// in.
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	open := []*fconn{c}
	for _, w := range f.workers {
		if w.c != nil && !w.c.isEnded() {
			open = append(open, w.c)
		}
	}
	for _, c := range open {
	catchUp:
		for {
			ended, changed := c.pull(f)
			behind := ""
			for r, seq := range fence {
				if _, in := c.epoch[r]; in && c.isMember(r) && c.lastSeq[r] < seq {
					behind = fmt.Sprintf("%s at %d of %d", r, c.lastSeq[r], seq)
				}
			}
			switch {
			case behind == "":
				c.atFence = !ended
				break catchUp
			case ended:
				break catchUp
			}
			select {
			case <-changed:
			case <-deadline.C:
				f.errorf("%s: still behind the fence after %v: %s", c.name, waitTimeout, behind)
				break catchUp
			}
		}
	}
	return fence
}

// isMember tells, from what the connection received, whether it is in room
// now: its last room.joined for the room came after its last room.left.
func (c *fconn) isMember(room string) bool {
	in := false
	for _, m := range c.msgs {
		switch m.env.Type {
		case "room.joined":
			if c.reqs[string(m.env.ID)].room == room {
				in = true
			}
		case "room.left":
			if c.reqs[string(m.env.ID)].room == room {
				in = false
			}
		}
	}
	return in
}

// eventuallyFault waits until cond holds, for at most waitTimeout.
func eventuallyFault(f *faultRun, what string, cond func() bool) bool {
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			f.errorf("timed out waiting for %s", what)
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

func decodeFault[T any](f *faultRun, e envelope) T {
	var v T
	if err := json.Unmarshal(e.Payload, &v); err != nil {
		f.errorf("payload of %q: %v: %.200s", e.Type, err, e.Payload)
	}
	return v
}

// closeAll closes every client still connected (workers and the fence
// normally, stallers at once), waits for every read loop, and returns every
// connection a worker or the fence made.
func (f *faultRun) closeAll() []*fconn {
	var conns []*fconn
	var open []*fconn
	for _, w := range f.workers {
		conns = append(conns, w.conns...)
		if w.c != nil && !w.c.isEnded() {
			open = append(open, w.c)
		}
	}
	if f.fence != nil {
		conns = append(conns, f.fence)
		open = append(open, f.fence)
	}
	var wg sync.WaitGroup
	for _, c := range open {
		if c.ended == "" {
			c.ended = "final"
		}
		wg.Go(func() { _ = c.ws.Close(websocket.StatusNormalClosure, "done") })
	}
	// How the server ended the stallers, before the test does.
	f.mu.Lock()
	for _, fs := range f.sessions {
		if strings.HasPrefix(fs.name, "fault-stall-") {
			switch {
			case fs.closes == 0:
				f.stallersLeft = append(f.stallersLeft, fs.name+" still open")
			case fs.code == int(troupe.CloseTryAgainLater) && fs.slow, fs.code == int(troupe.CloseAbnormal) && fs.writeTimeout:
			default:
				f.stallersLeft = append(f.stallersLeft, fmt.Sprintf("%s closed %d %q (slow consumer: %v, write timeout: %v)", fs.name, fs.code, fs.reason, fs.slow, fs.writeTimeout))
			}
		}
	}
	f.mu.Unlock()
	for _, ws := range f.stallers {
		_ = ws.CloseNow()
	}
	wg.Wait()
	for _, c := range conns {
		if !c.waitEnd(waitTimeout) {
			f.errorf("%s: read loop still running %v after the close", c.name, waitTimeout)
			_ = c.ws.CloseNow()
			c.waitEnd(waitTimeout)
		}
		c.pull(f)
	}
	return conns
}

// waitSessionsClosed waits until every session that opened has had its
// OnClose and the server has none left.
func (f *faultRun) waitSessionsClosed() {
	eventuallyFault(f, "every session to close", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.sessions {
			if s.closes == 0 {
				return false
			}
		}
		return len(f.srv.Sessions()) == 0
	})
}

// checkHooks checks OnOpen/OnClose (exactly once each for every session)
// and that OnError heard only of what the run provokes.
func (f *faultRun) checkHooks() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, s := range f.sessions {
		if s.opens != 1 || s.closes != 1 {
			f.errorf("session %s (%s): OnOpen %d times, OnClose %d times; want once each", id, s.name, s.opens, s.closes)
		}
	}
	for _, s := range f.strayClose {
		f.errorf("OnClose for a session that never opened: %s", s)
	}
	for _, e := range f.unexpected {
		f.errorf("OnError of no expected class (a room panic on %q, a slow consumer, a write timeout): %s", faultBoom, e)
	}
	if booms := f.booms.Load(); int64(f.panics) > booms {
		f.errorf("OnError heard of %d room panics, but only %d boom messages reached a room", f.panics, booms)
	}
}

// fseg is one membership of one connection in one room, from a
// room.joined to a room.left, another room.joined of the same room, or the
// end of the connection.
type fseg struct {
	conn   *fconn
	room   string
	epoch  string
	joined uint64 // room.joined's seq
	// start is the last seq before the messages the member must get
	// without a gap: since, for a resume that recovered, else joined.
	start uint64
	next  uint64 // the seq the next room.message must have
	// loose: a resume that did not recover may still get what the
	// history has after since, ascending, up to joined.
	loose     bool
	looseLast uint64
	got       []uint64
	stayed    bool // open at the fence
}

func (s *fseg) has(seq uint64) bool {
	_, ok := slices.BinarySearch(s.got, seq)
	return ok
}

// fack is an acknowledged room.publish.
type fack struct {
	conn  string
	room  string
	epoch string
	seq   uint64
	body  string
	from  string
}

// analyze checks every connection's stream (see TestFaultInjection).
func (f *faultRun) analyze(conns []*fconn, fence map[string]uint64) {
	table := map[string]string{} // room/epoch/seq -> the room.message payload
	seen := map[string]string{}  // room/epoch/seq -> who saw it first
	record := func(who, room, epoch string, seq uint64, payload []byte) {
		k := fmt.Sprintf("%s/%s/%d", room, epoch, seq)
		if prev, ok := table[k]; !ok {
			table[k], seen[k] = string(payload), who
		} else if prev != string(payload) {
			f.errorf("seq %d of %s: %s got %.200s, but %s got %.200s", seq, room, who, payload, seen[k], prev)
		}
	}
	var segs []*fseg
	var acks []fack
	for _, c := range conns {
		active := map[string]*fseg{}
		for _, m := range c.msgs {
			e := m.env
			req := c.reqs[string(e.ID)]
			switch e.Type {
			case "room.joined":
				p := decodeFault[joinedPayload](f, e)
				if p.Recovered == nil {
					f.errorf("%s: room.joined without recovered: %.200s", c.name, e.Payload)
					p.Recovered = new(bool)
				}
				if prev := active[p.Room]; prev != nil {
					if !prev.loose && prev.next-1 != p.Seq {
						f.errorf("%s: a repeated join of %s answered seq %d, but the member's stream was at %d", c.name, p.Room, p.Seq, prev.next-1)
					}
					segs = append(segs, prev)
				}
				rec := *p.Recovered
				if w := req.wantRecovered; w != nil && *w != rec {
					f.errorf("%s: join of %s since %d epoch %q answered seq %d epoch %q recovered %v, want recovered %v",
						c.name, p.Room, *req.since, req.epoch, p.Seq, p.Epoch, rec, *w)
				}
				if req.since == nil && rec {
					// A join without since has nothing to recover; either
					// answer is allowed, neither replays anything.
					rec = false
				}
				s := &fseg{conn: c, room: p.Room, epoch: p.Epoch, joined: p.Seq, start: p.Seq}
				if req.since != nil && rec {
					if *req.since > p.Seq {
						f.errorf("%s: join of %s since %d answered recovered at seq %d", c.name, p.Room, *req.since, p.Seq)
					}
					s.start = *req.since
				}
				if req.since != nil && !rec && *req.since < p.Seq && (req.epoch == "" || req.epoch == p.Epoch) {
					s.loose, s.looseLast = true, *req.since
				}
				s.next = s.start + 1
				active[p.Room] = s
			case "room.message":
				p := decodeFault[roomMessage](f, e)
				s := active[p.Room]
				if s == nil {
					f.errorf("%s: room.message %d of %s while not a member (after room.left, or before room.joined)", c.name, p.Seq, p.Room)
					continue
				}
				record(c.name, p.Room, s.epoch, p.Seq, e.Payload)
				if s.loose && p.Seq <= s.joined {
					if p.Seq <= s.looseLast {
						f.errorf("%s: resumed %s without recovering: seq %d after %d", c.name, p.Room, p.Seq, s.looseLast)
					}
					s.looseLast = p.Seq
					s.got = append(s.got, p.Seq)
					continue
				}
				if s.loose {
					s.loose, s.next = false, s.joined+1
				}
				if p.Seq != s.next {
					what := "a gap"
					if p.Seq < s.next {
						what = "a repeat or out of order"
					}
					f.errorf("%s: in %s got seq %d after %d (%s; member since seq %d)", c.name, p.Room, p.Seq, s.next-1, what, s.start)
				}
				s.next = p.Seq + 1
				if n := len(s.got); n == 0 || s.got[n-1] < p.Seq {
					s.got = append(s.got, p.Seq)
				}
			case "room.left":
				if s := active[req.room]; s != nil {
					segs = append(segs, s)
					delete(active, req.room)
				} else {
					f.errorf("%s: room.left for %s, a room it was not in", c.name, req.room)
				}
			case "room.published":
				p := decodeFault[publishedPayload](f, e)
				s := active[p.Room]
				switch {
				case p.Room != req.room:
					f.errorf("%s: publish to %s acknowledged for %s", c.name, req.room, p.Room)
				case s == nil:
					f.errorf("%s: publish to %s acknowledged while not a member", c.name, p.Room)
				case !s.has(p.Seq):
					f.errorf("%s: room.published %d of %s came before the publisher's own room.message %d (it had up to %d)", c.name, p.Seq, p.Room, p.Seq, s.next-1)
				default:
					acks = append(acks, fack{conn: c.name, room: p.Room, epoch: s.epoch, seq: p.Seq, body: req.body, from: c.sid})
				}
			case "room.history":
				p := decodeFault[historyPayload](f, e)
				s := active[p.Room]
				if s == nil {
					f.errorf("%s: room.history of %s answered to a non-member", c.name, p.Room)
					continue
				}
				limit := req.limit
				if limit <= 0 {
					limit = 50
				}
				if len(p.Messages) > limit {
					f.errorf("%s: history of %s with limit %d has %d messages", c.name, p.Room, req.limit, len(p.Messages))
				}
				var prev uint64
				for _, raw := range p.Messages {
					var hm roomMessage
					if err := json.Unmarshal(raw, &hm); err != nil || hm.Room != p.Room {
						f.errorf("%s: history of %s has %.200s", c.name, p.Room, raw)
						continue
					}
					if hm.Seq <= prev || (req.before > 0 && hm.Seq >= req.before) {
						f.errorf("%s: history of %s before %d: seq %d after %d", c.name, p.Room, req.before, hm.Seq, prev)
					}
					prev = hm.Seq
					record(c.name+" (history)", p.Room, s.epoch, hm.Seq, raw)
				}
			case "error":
				switch code := errCode(e); {
				case code == "not_member" && active[req.room] != nil && req.typ != "app.poke":
					f.errorf("%s: %s to %s refused not_member while a member", c.name, req.typ, req.room)
				case code == typed.CodeInternal:
					f.errorf("%s: %s answered an internal error %.200s", c.name, req.typ, e.Payload)
				}
			}
		}
		for _, s := range active {
			s.stayed = c.atFence
			segs = append(segs, s)
		}
	}

	for _, a := range acks {
		k := fmt.Sprintf("%s/%s/%d", a.room, a.epoch, a.seq)
		var m roomMessage
		if err := json.Unmarshal([]byte(table[k]), &m); err != nil || string(m.Body) != a.body || m.From != a.from {
			f.errorf("%s: publish %s acknowledged as seq %d of %s, but that seq is %.200s", a.conn, a.body, a.seq, a.room, table[k])
		}
		for _, s := range segs {
			if s.stayed && s.room == a.room && s.epoch == a.epoch && s.start < a.seq && !s.has(a.seq) {
				f.errorf("publish %d of %s acknowledged to %s never reached %s, a member from seq %d to the end", a.seq, a.room, a.conn, s.conn.name, s.start)
			}
		}
	}
	for _, s := range segs {
		if s.stayed && fence[s.room] > 0 && s.next-1 < fence[s.room] {
			f.errorf("%s: stayed in %s to the end but got up to seq %d, fence %d", s.conn.name, s.room, s.next-1, fence[s.room])
		}
	}

	// How connections the client did not end were ended by the server.
	for _, c := range conns {
		if c.ended != "" {
			continue
		}
		code, reason := c.closeStatus()
		f.mu.Lock()
		s := f.sessions[c.sid]
		f.mu.Unlock()
		switch {
		case f.shutdownRun && f.shutdownStarted.Load() && code == int(troupe.CloseGoingAway):
		case code == int(troupe.CloseTryAgainLater) && s != nil && s.slow:
			f.t.Logf("%s: a reading client dropped as a slow consumer", c.name)
		default:
			f.errorf("%s: the server ended a client that reads with %d (%s)", c.name, code, reason)
		}
	}

	// Every staller is in every room, so it is sent every room message:
	// far more than its queue and socket buffers hold once the run has
	// published a few hundred. The server must have dropped it.
	if !f.shutdownRun {
		for _, s := range f.stallersLeft {
			if len(table) >= 400 {
				f.errorf("a member that never reads, sent %d room messages, was not dropped as a slow consumer: %s", len(table), s)
			} else {
				f.t.Logf("only %d room messages: %s", len(table), s)
			}
		}
	}

	stayed := 0
	for _, s := range segs {
		if s.stayed {
			stayed++
		}
	}
	f.t.Logf("checked %d memberships (%d to the end), %d acknowledged publishes, %d distinct room messages", len(segs), stayed, len(acks), len(table))
	if !f.shutdownRun && (stayed == 0 || len(acks) == 0) {
		f.errorf("nothing to check: %d memberships to the end, %d acknowledged publishes", stayed, len(acks))
	}
}

// logStats logs what the run did, for a reader to judge its coverage.
func (f *faultRun) logStats(conns []*fconn) {
	var msgs, reqs int
	ops := map[string]int{}
	for _, c := range conns {
		msgs += len(c.msgs)
		reqs += len(c.reqs)
		ops["ended:"+c.ended]++
	}
	var raw []string
	f.rawCases.Range(func(k, v any) bool {
		raw = append(raw, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	sort.Strings(raw)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t.Logf("%d sessions, %d worker connections (%v), %d requests with an id, %d messages received; raw: %s",
		len(f.sessions), len(conns), ops, reqs, msgs, strings.Join(raw, " "))
	f.t.Logf("OnError: %d room panics (of %d booms delivered), %d slow consumers, %d write timeouts", f.panics, f.booms.Load(), f.slow, f.timeouts)
}
