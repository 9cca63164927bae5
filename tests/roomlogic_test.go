package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/backplane/memory"
	"github.com/troupehq/troupe/troupetest"
)

// Room logic: typed room handlers that answer, timers, lifecycle,
// supervision limits, state continuity and the room's numbered stream,
// checked with real clients over 127.0.0.1.

// tally is room logic that counts, keeps its count across restarts and
// dormancy (Snapshot/Restore), and tells which incarnation it is.
type tally struct {
	troupe.NopRoomHandler
	gen   int64 // which handler instance (NewRoomHandler call) this is
	count int
}

type tallyMsg struct {
	Room string `json:"room"`
	N    int    `json:"n"`
	Fail string `json:"fail"` // "panic" or "refuse"
}

type tallyResult struct {
	Count int   `json:"count"`
	Gen   int64 `json:"gen"`
}

func (t *tally) add(r *troupe.Room, from *troupe.Session, m tallyMsg) (tallyResult, error) {
	if !r.Has(from) {
		return tallyResult{}, errors.New("a request from outside the room reached its logic")
	}
	if m.Fail == "refuse" {
		return tallyResult{}, troupe.NewError("refused", "not today")
	}
	t.count += m.N // changed before the failure: a restart must not keep it
	if m.Fail == "panic" {
		panic("tally: asked to fail")
	}
	return tallyResult{Count: t.count, Gen: t.gen}, nil
}

func (t *tally) Snapshot() any        { return t.count }
func (t *tally) Restore(state any)    { t.count = state.(int) }
func (t *tally) OnStart(*troupe.Room) {}

// tallyServer serves rooms whose logic is a tally, with "add" routed to it.
func tallyServer(t *testing.T, cfg troupe.Config) (*troupetest.Server, *atomic.Int64, *troupe.Server) {
	t.Helper()
	var gens atomic.Int64
	cfg.NewRoomHandler = func(string) troupe.RoomHandler { return &tally{gen: gens.Add(1)} }
	srv, err := troupe.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	troupe.HandleRoom(srv, "add", (*tally).add)
	return troupetest.NewServer(t, srv), &gens, srv
}

// waitStopped waits until the server has no live room: the last member's
// leave has stopped it (and, under the room protocol, made it dormant).
func waitStopped(t *testing.T, srv *troupe.Server) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for len(srv.Rooms()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("rooms %v still live", srv.Rooms())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func join(t *testing.T, c *troupetest.Client, room string) joinedPayload {
	t.Helper()
	var j joinedPayload
	if err := c.Request("room.join", map[string]any{"room": room}, &j); err != nil {
		t.Fatalf("join %s: %v", room, err)
	}
	return j
}

func replyCode(err error) string {
	var re *troupe.ReplyError
	if errors.As(err, &re) {
		return re.Code
	}
	return fmt.Sprint(err)
}

func TestRoomHandlerRepliesToTheRequest(t *testing.T) {
	ts, _, _ := tallyServer(t, troupe.Config{RoomProtocol: true})
	a, outsider := ts.Dial(t), ts.Dial(t)
	join(t, a, "r")

	var res tallyResult
	if err := a.Request("add", tallyMsg{Room: "r", N: 2}, &res); err != nil || res.Count != 2 {
		t.Fatalf("add 2: %+v, %v; want count 2", res, err)
	}
	if err := a.Request("add", map[string]any{"n": 3}, &res); replyCode(err) != "invalid_payload" {
		t.Fatalf("add without a room: %v, want invalid_payload", err)
	}
	if err := a.Request("add", tallyMsg{Room: "r", N: 1, Fail: "refuse"}, nil); replyCode(err) != "refused" {
		t.Fatalf("a refusal: %v, want the handler's code", err)
	}
	if err := outsider.Request("add", tallyMsg{Room: "r", N: 5}, nil); replyCode(err) != "not_member" {
		t.Fatalf("a request from a non-member: %v, want not_member", err)
	}
	if err := a.Request("add", tallyMsg{Room: "r", N: 1}, &res); err != nil || res.Count != 3 {
		t.Fatalf("after a refused and a foreign request: %+v, %v; want count 3 (neither counted)", res, err)
	}
}

func TestRoomHandlerPanicAnswersInternalAtOnce(t *testing.T) {
	errs := make(chan error, 4)
	ts, gens, _ := tallyServer(t, troupe.Config{RoomProtocol: true, OnError: func(_ *troupe.Session, err error) { errs <- err }})
	a := ts.Dial(t)
	join(t, a, "r")
	var res tallyResult
	if err := a.Request("add", tallyMsg{Room: "r", N: 1}, &res); err != nil {
		t.Fatal(err)
	}
	if err := a.Request("add", tallyMsg{Room: "r", N: 10, Fail: "panic"}, nil); replyCode(err) != "internal" {
		t.Fatalf("a panicking room handler answered %v, want internal", err)
	}
	var pe *troupe.PanicError
	if err := <-errs; !errors.As(err, &pe) || pe.Room != "r" {
		t.Fatalf("OnError got %v, want a *PanicError of room r", err)
	}
	// The room restarted (a new handler) with its member, and with the
	// state of the last call that returned: the failed call's +10 is gone.
	if err := a.Request("add", tallyMsg{Room: "r", N: 1}, &res); err != nil || res.Count != 2 || res.Gen != gens.Load() || res.Gen == 1 {
		t.Fatalf("after the panic: %+v, %v; want count 2 from a restarted handler", res, err)
	}
}

func TestRoomStateSurvivesDormancyAndRestart(t *testing.T) {
	ts, gens, srv := tallyServer(t, troupe.Config{RoomProtocol: true})
	a := ts.Dial(t)
	first := join(t, a, "r")
	var res tallyResult
	if err := a.Request("add", tallyMsg{Room: "r", N: 5}, &res); err != nil || res.Count != 5 {
		t.Fatalf("add: %+v, %v", res, err)
	}
	if err := a.Request("room.leave", map[string]any{"room": "r"}, nil); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, srv)
	// The room stopped with its last member and is dormant: the next join
	// starts a new handler with the same epoch, and the count is restored.
	again := join(t, a, "r")
	if again.Epoch != first.Epoch {
		t.Fatalf("epoch %q after the dormant period, want %q", again.Epoch, first.Epoch)
	}
	if err := a.Request("add", tallyMsg{Room: "r", N: 1}, &res); err != nil || res.Count != 6 || res.Gen != 2 {
		t.Fatalf("after a dormant period: %+v, %v; want count 6 from handler 2", res, err)
	}
	if err := a.Request("add", tallyMsg{Room: "r", N: 100, Fail: "panic"}, nil); replyCode(err) != "internal" {
		t.Fatalf("panic: %v", err)
	}
	if err := a.Request("add", tallyMsg{Room: "r", N: 1}, &res); err != nil || res.Count != 7 || res.Gen != 3 {
		t.Fatalf("after a restart: %+v, %v; want count 7 from handler 3", res, err)
	}
	if gens.Load() != 3 {
		t.Fatalf("%d handlers made, want 3", gens.Load())
	}
}

func TestRoomStateWithoutRetentionStartsAfresh(t *testing.T) {
	ts, _, srv := tallyServer(t, troupe.Config{RoomProtocol: true, HistoryRetention: -1})
	a := ts.Dial(t)
	join(t, a, "r")
	var res tallyResult
	if err := a.Request("add", tallyMsg{Room: "r", N: 5}, &res); err != nil {
		t.Fatal(err)
	}
	if err := a.Request("room.leave", map[string]any{"room": "r"}, nil); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, srv)
	join(t, a, "r")
	if err := a.Request("add", tallyMsg{Room: "r", N: 1}, &res); err != nil || res.Count != 1 {
		t.Fatalf("a room forgotten with its sequence: %+v, %v; want its state forgotten too (count 1)", res, err)
	}
}

// crashy panics on every "boom" and records what its timers deliver.
type crashy struct {
	troupe.NopRoomHandler
	gen  int64
	seen chan<- [2]int64 // {timer's incarnation, receiving incarnation}
}

type tick struct{ gen int64 }

func (c *crashy) OnStart(r *troupe.Room) {
	if c.gen == 1 {
		// The first incarnation's timers: the room restarts before the
		// first is due, and while the second ticks (a tick may well be
		// waiting in the mailbox when it does).
		r.After(100*time.Millisecond, tick{c.gen})
		r.Every(time.Millisecond, tick{c.gen})
		return
	}
	r.After(400*time.Millisecond, tick{c.gen})
}

func (c *crashy) OnMessage(_ *troupe.Room, from *troupe.Session, msg any) {
	if m, ok := msg.(tick); ok && from == nil && (m.gen != 1 || c.gen != 1) {
		c.seen <- [2]int64{m.gen, c.gen}
	}
}

func (c *crashy) boom(*troupe.Room, *troupe.Session, struct{}) (struct{}, error) {
	// Long enough for the first incarnation's 1 ms ticker to have a tick
	// waiting in the mailbox when the room restarts.
	time.Sleep(5 * time.Millisecond)
	panic("crashy: boom")
}

func crashyServer(t *testing.T, cfg troupe.Config) (*troupetest.Server, chan [2]int64) {
	t.Helper()
	seen := make(chan [2]int64, 100)
	var gens atomic.Int64
	cfg.NewRoomHandler = func(string) troupe.RoomHandler { return &crashy{gen: gens.Add(1), seen: seen} }
	srv, err := troupe.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	troupe.HandleRoom(srv, "boom", (*crashy).boom)
	return troupetest.NewServer(t, srv), seen
}

func TestRoomTimerNeverReachesALaterIncarnation(t *testing.T) {
	ts, seen := crashyServer(t, troupe.Config{RoomProtocol: true})
	a := ts.Dial(t)
	join(t, a, "r")
	if err := a.Request("boom", map[string]string{"room": "r"}, nil); replyCode(err) != "internal" {
		t.Fatalf("boom: %v", err)
	}
	// The second incarnation's own timer (400 ms) comes after the first's
	// would have (50 and 100 ms): none of theirs may arrive.
	select {
	case got := <-seen:
		if got[0] != got[1] {
			t.Fatalf("a timer of incarnation %d fired into incarnation %d", got[0], got[1])
		}
		if got[1] != 2 {
			t.Fatalf("tick of incarnation %d, want 2", got[1])
		}
	case <-time.After(waitTimeout):
		t.Fatal("the restarted room's own timer never fired")
	}
}

func TestRoomRestartIntensityStopsACrashLoop(t *testing.T) {
	errs := make(chan error, 10)
	ts, _ := crashyServer(t, troupe.Config{
		RoomProtocol:      true,
		MaxRoomRestarts:   2,
		RoomRestartWindow: time.Minute,
		OnError:           func(_ *troupe.Session, err error) { errs <- err },
	})
	a, b := ts.Dial(t), ts.Dial(t)
	join(t, a, "r")
	join(t, b, "r")
	a.Expect("presence.diff", nil)
	for i := range 3 {
		if err := a.Request("boom", map[string]string{"room": "r"}, nil); replyCode(err) != "internal" {
			t.Fatalf("boom %d: %v, want internal", i+1, err)
		}
	}
	// Two restarts were allowed; the third failure stops the room, and
	// each member is told why.
	for _, c := range []*troupetest.Client{a, b} {
		var left struct{ Room, Reason string }
		c.Expect("room.left", &left)
		if left.Room != "r" || !strings.Contains(left.Reason, "3 times") {
			t.Fatalf("room.left %+v, want room r with the reason", left)
		}
	}
	var stopped error
	for range 3 {
		stopped = <-errs
	}
	var pe *troupe.PanicError
	if !errors.Is(stopped, troupe.ErrRoomStopped) || !errors.As(stopped, &pe) || pe.Room != "r" {
		t.Fatalf("OnError got %v last, want ErrRoomStopped with the room's last panic", stopped)
	}
	if err := a.Request("boom", map[string]string{"room": "r"}, nil); replyCode(err) != "not_member" {
		t.Fatalf("a request to the stopped room: %v, want not_member", err)
	}
	// A later join starts the room afresh.
	j := join(t, a, "r")
	if len(j.Members) != 1 {
		t.Fatalf("room.joined after the stop lists %d members, want 1", len(j.Members))
	}
}

// censor is room logic that refuses some room.publish bodies and rewrites
// the others, and publishes into the stream itself on request.
type censor struct{ troupe.NopRoomHandler }

func (censor) OnPublish(_ *troupe.Room, from *troupe.Session, body json.RawMessage) (json.RawMessage, error) {
	var text string
	if json.Unmarshal(body, &text) != nil {
		return nil, troupe.NewError("bad_body", "a string, please")
	}
	if strings.Contains(text, "spam") {
		return nil, troupe.NewError("refused", "no spam here")
	}
	return json.Marshal(strings.ToUpper(text))
}

type announce struct {
	Room string `json:"room"`
	Text string `json:"text"`
}

func (censor) announce(_ censor, r *troupe.Room, _ *troupe.Session, m announce) (struct{}, error) {
	return struct{}{}, r.Publish("notice", m.Text)
}

func censorServer(t *testing.T, cfg troupe.Config) *troupetest.Server {
	t.Helper()
	cfg.RoomProtocol = true
	cfg.NewRoomHandler = func(string) troupe.RoomHandler { return censor{} }
	srv, err := troupe.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	troupe.HandleRoom(srv, "announce", censor{}.announce)
	return troupetest.NewServer(t, srv)
}

type published struct {
	Room string          `json:"room"`
	Seq  uint64          `json:"seq"`
	Type string          `json:"type"`
	From *string         `json:"from"`
	Body json.RawMessage `json:"body"`
}

func TestRoomPublishRefusedByRoomLogic(t *testing.T) {
	ts := censorServer(t, troupe.Config{})
	a, b := ts.Dial(t), ts.Dial(t)
	join(t, a, "r")
	join(t, b, "r")
	a.Expect("presence.diff", nil)
	if err := a.Request("room.publish", map[string]any{"room": "r", "body": "buy spam"}, nil); replyCode(err) != "refused" {
		t.Fatalf("a refused publish answered %v, want the logic's code", err)
	}
	if err := a.Request("room.publish", map[string]any{"room": "r", "body": 5}, nil); replyCode(err) != "bad_body" {
		t.Fatalf("a refused publish answered %v, want the logic's code", err)
	}
	var ack struct{ Seq uint64 }
	if err := a.Request("room.publish", map[string]any{"room": "r", "body": "hello"}, &ack); err != nil || ack.Seq != 1 {
		t.Fatalf("an accepted publish: %+v, %v; want seq 1 (the refused ones took none)", ack, err)
	}
	for _, c := range []*troupetest.Client{a, b} {
		var m published
		c.Expect("room.message", &m)
		if m.Seq != 1 || string(m.Body) != `"HELLO"` {
			t.Fatalf("got %+v, want seq 1 with the body as the logic rewrote it", m)
		}
	}
}

// expectLogicMessage takes the next message of c: the room logic's
// message seq.
func expectLogicMessage(t *testing.T, c *troupetest.Client, seq uint64, body string) {
	t.Helper()
	var m published
	c.Expect("room.message", &m)
	if m.Seq != seq || m.Type != "notice" || m.From != nil || string(m.Body) != body {
		t.Fatalf("got %+v, want seq %d of type notice, no from, body %s", m, seq, body)
	}
}

func TestRoomLogicPublishesIntoTheStream(t *testing.T) {
	ts := censorServer(t, troupe.Config{})
	a, b := ts.Dial(t), ts.Dial(t)
	join(t, a, "r")
	join(t, b, "r")
	a.Expect("presence.diff", nil)
	if err := a.Request("room.publish", map[string]any{"room": "r", "body": "one"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Request("announce", announce{Room: "r", Text: "two"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*troupetest.Client{a, b} {
		c.Expect("room.message", nil)
		expectLogicMessage(t, c, 2, `"two"`)
	}
	// It is in the history, so a client that comes back resumes it.
	c := ts.Dial(t)
	var j joinedPayload
	if err := c.Request("room.join", map[string]any{"room": "r", "since": 1}, &j); err != nil || j.Recovered == nil || !*j.Recovered {
		t.Fatalf("resume: %+v, %v", j, err)
	}
	expectLogicMessage(t, c, 2, `"two"`)
}

func TestRoomLogicPublishesAcrossNodes(t *testing.T) {
	cluster := memory.NewCluster(100)
	var nodes []*troupetest.Server
	for i := range 2 {
		nodes = append(nodes, censorServer(t, troupe.Config{Backplane: cluster.Node(fmt.Sprintf("n%d", i))}))
	}
	a, b := nodes[0].Dial(t), nodes[1].Dial(t)
	join(t, a, "r")
	var ack struct{ Seq uint64 }
	if err := a.Request("room.publish", map[string]any{"room": "r", "body": "one"}, &ack); err != nil || ack.Seq != 1 {
		t.Fatalf("publish: %+v, %v", ack, err)
	}
	a.Expect("room.message", nil)
	join(t, b, "r")
	a.Expect("presence.diff", nil)
	if err := b.Request("announce", announce{Room: "r", Text: "two"}, nil); err != nil {
		t.Fatal(err)
	}
	expectLogicMessage(t, a, 2, `"two"`)
	expectLogicMessage(t, b, 2, `"two"`)
}

// lifecycle records its OnStart and OnStop calls, and holds its first
// "hold" request until released.
type lifecycle struct {
	troupe.NopRoomHandler
	events  chan<- string
	release <-chan struct{}
	held    bool
}

func (l *lifecycle) OnStart(r *troupe.Room) { l.events <- "start " + r.Name() }
func (l *lifecycle) OnStop(r *troupe.Room)  { l.events <- "stop " + r.Name() }

func (l *lifecycle) hold(_ *troupe.Room, _ *troupe.Session, m struct{ Panic bool }) (bool, error) {
	if m.Panic {
		panic("lifecycle: asked to fail")
	}
	if !l.held {
		l.held = true
		<-l.release
	}
	return true, nil
}

// lifecycleServer returns the server, the events its rooms' logic saw,
// and the function that releases the held request (also at the test's
// end, so that a failing test does not leave the room blocked).
func lifecycleServer(t *testing.T, cfg troupe.Config) (*troupetest.Server, chan string, func()) {
	t.Helper()
	events, release := make(chan string, 100), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	cfg.RoomProtocol = true
	cfg.NewRoomHandler = func(string) troupe.RoomHandler { return &lifecycle{events: events, release: release} }
	srv, err := troupe.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	troupe.HandleRoom(srv, "hold", (*lifecycle).hold)
	ts := troupetest.NewServer(t, srv)
	t.Cleanup(free) // before the server's shutdown
	return ts, events, free
}

func expectEvent(t *testing.T, events chan string, want string) {
	t.Helper()
	select {
	case got := <-events:
		if got != want {
			t.Fatalf("room logic saw %q, want %q", got, want)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("room logic never saw %q", want)
	}
}

func TestRoomLifecycleHooks(t *testing.T) {
	ts, events, release := lifecycleServer(t, troupe.Config{})
	release()
	a := ts.Dial(t)
	join(t, a, "r")
	expectEvent(t, events, "start r")
	// A restart starts the new incarnation; the failed one is not stopped
	// as if it had ended well.
	if err := a.Request("hold", map[string]any{"room": "r", "Panic": true}, nil); replyCode(err) != "internal" {
		t.Fatal(err)
	}
	expectEvent(t, events, "start r")
	if err := a.Request("room.leave", map[string]any{"room": "r"}, nil); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, events, "stop r")
}

// One client cannot make a room keep more than maxPendingCalls of its
// requests: beyond them, requests are refused as unavailable.
func TestRoomRequestsWaitingAreBounded(t *testing.T) {
	ts, _, release := lifecycleServer(t, troupe.Config{Settings: troupe.Settings{RateLimit: -1, MaxQueuedMessages: 4000}})
	a := ts.Dial(t)
	join(t, a, "r")
	const n = 1100
	for range n {
		a.Send("hold", map[string]any{"room": "r"})
	}
	// The room holds the first; of the rest, those beyond the bound are
	// refused at once, while the room is still busy.
	var e struct{ Code string }
	a.Expect("error", &e)
	if e.Code != "unavailable" {
		t.Fatalf("got %q, want unavailable", e.Code)
	}
	release()
	// Once the room has worked through its mailbox, it takes requests
	// again.
	for deadline := time.Now().Add(waitTimeout); ; time.Sleep(10 * time.Millisecond) {
		err := a.Request("hold", map[string]any{"room": "r"}, nil)
		if err == nil {
			break
		}
		if replyCode(err) != "unavailable" || time.Now().After(deadline) {
			t.Fatalf("once the room caught up: %v", err)
		}
	}
}

// slowCrash is room logic whose every request panics, after a pause long
// enough for the requests sent behind it to wait in the room's mailbox.
type slowCrash struct{ troupe.NopRoomHandler }

func (slowCrash) boom(_ slowCrash, _ *troupe.Room, _ *troupe.Session, _ struct{ Room string }) (struct{}, error) {
	time.Sleep(50 * time.Millisecond)
	panic("boom")
}

// startSlowCrashServer serves rooms whose logic crashes slowly on "boom",
// with a restart limit of one.
func startSlowCrashServer(t *testing.T) *testServer {
	t.Helper()
	h := startServer(t, troupe.Config{
		RoomProtocol:      true,
		MaxRoomRestarts:   1,
		RoomRestartWindow: time.Minute,
		NewRoomHandler:    func(string) troupe.RoomHandler { return slowCrash{} },
	})
	troupe.HandleRoom(h.srv, "boom", slowCrash{}.boom)
	return h
}

// Requests still waiting in a room's mailbox when the restart limit drops
// its logic are answered, not left to time out: every request gets exactly
// one answer.
func TestRoomStoppedByRestartLimitAnswersWaitingRequests(t *testing.T) {
	h := startSlowCrashServer(t)
	c := h.dial(t, "a")
	c.startReading()
	c.write(t, mustEnvelope(t, "room.join", map[string]string{"room": "r"}, json.RawMessage(`"j"`)))
	c.expect(t, "room.joined")
	const n = 8
	for i := range n {
		c.write(t, mustEnvelope(t, "boom", map[string]string{"room": "r"}, json.RawMessage(strconv.Itoa(i))))
	}
	codes := map[string]int{}
	answered := map[string]bool{}
	for len(answered) < n {
		e := c.nextEnvelope(t)
		if e.Type != "error" || len(e.ID) == 0 {
			continue // room.left
		}
		if answered[string(e.ID)] {
			t.Fatalf("request %s answered twice", e.ID)
		}
		answered[string(e.ID)] = true
		p := decodePayload[struct{ Code, Message string }](t, e)
		codes[p.Code]++
	}
	// Two failures (one restart allowed), then the logic is dropped and
	// the member removed: the requests queued behind them are answered
	// (not_member), none is handled by the fresh logic.
	if codes["internal"] != 2 || codes["not_member"] != n-2 {
		t.Fatalf("answers by code %v, want 2 internal and the rest not_member", codes)
	}
}

// A join waiting in the mailbox of a room whose logic the restart limit
// drops is answered: the joiner becomes a member of the room, run by
// fresh logic.
func TestRoomJoinWaitingAtRestartLimitIsAnswered(t *testing.T) {
	h := startSlowCrashServer(t)
	a, b := h.dial(t, "a"), h.dial(t, "b")
	a.startReading()
	b.startReading()
	a.write(t, mustEnvelope(t, "room.join", map[string]string{"room": "r"}, json.RawMessage(`"j"`)))
	a.expect(t, "room.joined")
	for i := range 2 {
		a.write(t, mustEnvelope(t, "boom", map[string]string{"room": "r"}, json.RawMessage(strconv.Itoa(i))))
	}
	time.Sleep(20 * time.Millisecond) // the first boom is being handled
	b.write(t, mustEnvelope(t, "room.join", map[string]string{"room": "r"}, json.RawMessage(`"j"`)))
	e := b.expect(t, "room.joined")
	j := decodePayload[joinedPayload](t, e)
	if len(j.Members) != 1 {
		t.Fatalf("room.joined lists %d members, want 1 (a was removed with the failing logic)", len(j.Members))
	}
}

// A room request to a room that has no logic is refused, not answered empty.
func TestRoomRequestWithoutLogicIsUnknownType(t *testing.T) {
	h := startServer(t, troupe.Config{RoomProtocol: true})
	troupe.HandleRoom(h.srv, "boom", slowCrash{}.boom)
	c := h.dial(t, "a")
	c.startReading()
	c.write(t, mustEnvelope(t, "room.join", map[string]string{"room": "r"}, json.RawMessage(`"j"`)))
	c.expect(t, "room.joined")
	c.write(t, mustEnvelope(t, "boom", map[string]string{"room": "r"}, json.RawMessage(`1`)))
	e := c.expect(t, "error")
	if p := decodePayload[struct{ Code string }](t, e); p.Code != "unknown_type" {
		t.Fatalf("a room request to a room without logic: %s, want unknown_type", e.Payload)
	}
}
