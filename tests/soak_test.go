package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/typed"
)

const (
	// soakDuration is how long connections are churned.
	soakDuration = 4 * time.Second
	// soakWorkers is how many clients churn at once.
	soakWorkers = 16
	// soakRooms is how many rooms the workers share, so rooms are created,
	// shared and stopped as members come and go.
	soakRooms = 4
	// soakGoroutineSlack is how many goroutines above the starting level
	// are tolerated afterwards (timers and pools the runtime may keep); a
	// leak per connection would leave thousands.
	soakGoroutineSlack = 5
	// soakHeapSlack and soakHeapPerCycle bound the live heap above the
	// starting level afterwards. Some growth is expected and bounded: the
	// actor library's process registry is 32768 small maps, each keeping
	// its table (about 300 bytes) once an actor ID has landed in it, up to
	// about 9 MiB once some 100000 actors have come and gone; a cycle spawns
	// one session actor and sometimes a room. A leaked connection costs
	// several KiB on the server alone, well over the allowance per cycle.
	soakHeapSlack    = 4 << 20
	soakHeapPerCycle = 1 << 10
)

// TestSoakConnectionChurn churns connections for a bounded time, many in
// parallel: each opens, joins a shared room, publishes, reads its own
// message back, and closes (normally, abruptly, or after leaving). Then
// every session and room must be gone, and the goroutine count and the live
// heap must come back to their starting level.
func TestSoakConnectionChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: skipped with -short")
	}
	// Its own server rather than startServer: the recorder keeps every
	// session, which would grow the heap the test measures.
	var opened, closed, writeErrs atomic.Int64
	var panics sync.Map // errors that came from a panic, reported at the end
	cfg := benchConfig(troupe.Settings{})
	cfg.OnOpen = func(*troupe.Session) { opened.Add(1) }
	cfg.OnClose = func(*troupe.Session, int, string) { closed.Add(1) }
	cfg.OnError = func(s *troupe.Session, err error) {
		var pe *typed.PanicError
		if errors.As(err, &pe) || strings.Contains(err.Error(), "panic") {
			panics.Store(err.Error(), true)
			return
		}
		// Writes to clients that vanished without a close handshake fail,
		// and OnError is told: expected here.
		writeErrs.Add(1)
	}
	srv, err := troupe.New(cfg)
	if err != nil {
		t.Fatalf("troupe.New: %v", err)
	}
	registerBench(srv)
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		_ = srv.Close()
		ts.Close()
	})
	url := "ws" + strings.TrimPrefix(ts.URL, "http")

	settle := func(what string) {
		t.Helper()
		eventually(t, what, func() bool {
			return len(srv.Sessions()) == 0 && len(srv.Rooms()) == 0 && opened.Load() == closed.Load()
		})
	}

	// A short warm-up first, so pools and the actor system's own
	// goroutines exist before the starting level is taken.
	soakChurn(t, url, 4, 200*time.Millisecond)
	settle("warm-up connections to close")
	baseG := runtime.NumGoroutine()
	baseHeap := soakLiveHeap()

	cycles := soakChurn(t, url, soakWorkers, soakDuration)
	if t.Failed() {
		return
	}
	settle("churned connections to close")
	if cycles < soakWorkers {
		t.Fatalf("only %d connection cycles completed", cycles)
	}

	var g int
	deadline := time.Now().Add(waitTimeout)
	for g = runtime.NumGoroutine(); g > baseG+soakGoroutineSlack && time.Now().Before(deadline); g = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	if g > baseG+soakGoroutineSlack {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after %d connections, %d before:\n%s", g, cycles, baseG, buf[:runtime.Stack(buf, true)])
	}

	allowed := baseHeap + soakHeapSlack + uint64(opened.Load())*soakHeapPerCycle
	heap := soakLiveHeap()
	for deadline := time.Now().Add(waitTimeout); heap > allowed && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		heap = soakLiveHeap()
	}
	t.Logf("%d connection cycles (%d sessions opened, %d failed writes to vanished clients); goroutines %d -> %d; live heap %.1f -> %.1f MiB (at most %.1f)",
		cycles, opened.Load(), writeErrs.Load(), baseG, g, soakMiB(baseHeap), soakMiB(heap), soakMiB(allowed))
	if heap > allowed {
		t.Errorf("live heap %.1f MiB after %d connections, %.1f MiB before: more than %.1f MiB", soakMiB(heap), opened.Load(), soakMiB(baseHeap), soakMiB(allowed))
	}
	panics.Range(func(k, _ any) bool {
		t.Errorf("OnError received a panic: %v", k)
		return true
	})
}

// soakChurn runs workers clients, each opening, using and closing one
// connection after another until d has passed, and returns how many cycles
// completed. A failed step fails the test and stops that worker.
func soakChurn(t *testing.T, url string, workers int, d time.Duration) int {
	t.Helper()
	var cycles atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				if err := soakCycle(url, w, i); err != nil {
					t.Errorf("worker %d, cycle %d: %v", w, i, err)
					return
				}
				cycles.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(cycles.Load())
}

// soakCycle is one connection's life: join, publish, read the message back,
// then close in one of three ways.
func soakCycle(url string, worker, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.CloseNow()
	room := fmt.Sprintf("soak-%d", worker%soakRooms)
	body := fmt.Sprintf("w%d-%d", worker, i)

	write := func(typ string, payload any) error {
		b, err := json.Marshal(map[string]any{"type": typ, "payload": payload})
		if err != nil {
			return err
		}
		return c.Write(ctx, websocket.MessageText, b)
	}
	// await reads until a message of type typ that match accepts; other
	// members' messages to the shared room are skipped.
	await := func(typ string, match func(json.RawMessage) bool) error {
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return fmt.Errorf("waiting for %s: %w", typ, err)
			}
			var e envelope
			if err := json.Unmarshal(data, &e); err != nil {
				return fmt.Errorf("frame %q: %w", data, err)
			}
			if e.Type == "error" {
				return fmt.Errorf("error reply %s", e.Payload)
			}
			if e.Type == typ && match(e.Payload) {
				return nil
			}
		}
	}
	isRoom := func(p json.RawMessage) bool {
		var m benchRoom
		return json.Unmarshal(p, &m) == nil && m.Room == room
	}

	if err := write("room.join", benchRoom{Room: room}); err != nil {
		return err
	}
	if err := await("room.joined", isRoom); err != nil {
		return err
	}
	if err := write("room.publish", map[string]string{"room": room, "body": body}); err != nil {
		return err
	}
	if err := await("room.message", func(p json.RawMessage) bool {
		var m benchMessage
		return json.Unmarshal(p, &m) == nil && m.Room == room && string(m.Body) == `"`+body+`"`
	}); err != nil {
		return err
	}
	// A normal close must complete its handshake: the server answers the
	// client's close frame with its own, even while it is writing room
	// messages to the client.
	closeNormally := func() error {
		if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
			return fmt.Errorf("normal close handshake did not complete: %w", err)
		}
		return nil
	}
	switch i % 3 {
	case 0: // vanish without a close handshake
		return c.CloseNow()
	case 1:
		return closeNormally()
	default:
		if err := write("room.leave", benchRoom{Room: room}); err != nil {
			return err
		}
		if err := await("room.left", isRoom); err != nil {
			return err
		}
		return closeNormally()
	}
}

// soakLiveHeap returns the bytes of live heap objects after full collections
// (two, so objects freed by finalizers and sync.Pool contents are gone).
func soakLiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func soakMiB(b uint64) float64 { return float64(b) / (1 << 20) }
