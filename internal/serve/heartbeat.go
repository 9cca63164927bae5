package serve

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

// heartbeat is one session's ping and idle-timeout timer. It is a single
// time.AfterFunc timer, re-armed (Reset, no allocation) for whichever comes
// first (the next ping or the idle deadline), so an idle connection holds
// no goroutine for it.
type heartbeat struct {
	cfg      *Config
	ws       *wsConn
	s        *session.Session
	lastRead atomic.Int64 // unix nanoseconds of the last message or ping read
	// probe: the connection looked idle at the last check; the read loop
	// tells of its next message at once. lazy: the read loop tells of
	// messages only now and then (conn.touchEvery); between: it is
	// waiting for the client between two messages, having told of all it
	// read, so an idle look is the truth.
	probe, lazy, between atomic.Bool
	lastPing             time.Time // only touched by the timer callback

	mu      sync.Mutex
	timer   *time.Timer
	done    bool
	pinging context.CancelFunc // the ping waiting for its pong, if any
	runs    sync.WaitGroup
}

// start sets h up (it lives inside the connection's state, saving an
// allocation) and arms the first check.
func (h *heartbeat) start(cfg *Config, ws *wsConn, s *session.Session) {
	h.cfg, h.ws, h.s = cfg, ws, s
	now := time.Now()
	h.lastRead.Store(now.UnixNano())
	h.lastPing = now
	h.arm(now)
}

// probeWait is how long a connection found idle while its read loop is in
// the middle of a message (or busy) is given to show one: a client whose
// messages are each read whole only when the next arrives is seen as long
// as they come more often than this.
func probeWait(idle time.Duration) time.Duration { return idle / 2 }

// touch records that the client sent something: a message, or a ping
// (wsConn.pinged). Pongs, which only answer our pings, do not count.
func (h *heartbeat) touch() { h.touchAt(time.Now()) }

// touchAt is touch with the time already read.
func (h *heartbeat) touchAt(t time.Time) { h.lastRead.Store(t.UnixNano()) }

// arm schedules the next check, unless the heartbeat was stopped.
func (h *heartbeat) arm(now time.Time) { h.armIn(now, -1) }

// armIn is arm with the idle check due in idleIn instead, if not negative.
func (h *heartbeat) armIn(now time.Time, idleIn time.Duration) {
	var next time.Duration = -1
	if h.pings() {
		next = h.lastPing.Add(h.cfg.PingInterval).Sub(now)
	}
	if h.cfg.IdleTimeout > 0 {
		idle := time.Unix(0, h.lastRead.Load()).Add(h.cfg.IdleTimeout).Sub(now)
		if idleIn >= 0 {
			idle = idleIn
		}
		if next < 0 || idle < next {
			next = idle
		}
	}
	if next < 0 && !h.pings() && h.cfg.IdleTimeout <= 0 {
		return // nothing to watch
	}
	if next < time.Millisecond {
		next = time.Millisecond
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return
	}
	h.runs.Add(1)
	if h.timer == nil {
		h.timer = time.AfterFunc(next, h.tick)
	} else {
		// Only re-armed from tick, once the timer has fired: it is not
		// pending, so Reset schedules it afresh.
		h.timer.Reset(next)
	}
}

func (h *heartbeat) tick() {
	defer h.runs.Done()
	h.fire()
}

func (h *heartbeat) fire() {
	if !h.s.IsOpen() {
		return
	}
	now := time.Now()
	if h.cfg.IdleTimeout > 0 && now.Sub(time.Unix(0, h.lastRead.Load())) >= h.cfg.IdleTimeout {
		if h.lazy.Load() && !h.between.Load() && !h.probe.Swap(true) {
			// The read loop does not tell of every message (see
			// touchEvery): one it read since it last did would not
			// show yet. Asked now, it tells of the next one at once.
			h.armIn(now, probeWait(h.cfg.IdleTimeout))
			return
		}
		_ = h.s.CloseWith(session.ClosePolicyViolation, "idle timeout")
		return
	}
	h.probe.Store(false)
	if h.pings() && now.Sub(h.lastPing) >= h.cfg.PingInterval {
		h.lastPing = now
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.PongTimeout)
		h.mu.Lock()
		if h.done {
			h.mu.Unlock()
			cancel()
			return
		}
		h.pinging = cancel
		h.mu.Unlock()
		err := h.ws.ws.Ping(ctx)
		h.mu.Lock()
		h.pinging = nil
		h.mu.Unlock()
		cancel()
		if err != nil {
			if h.s.IsOpen() && !h.stopped() {
				session.Drop(h.s, "pong timeout")
			}
			return
		}
		now = time.Now()
	}
	h.arm(now)
}

// stop cancels the timer and waits for a check in progress to return. A
// ping waiting for its pong is given up: the connection is gone, and no
// pong can arrive with nobody reading.
func (h *heartbeat) stop() {
	h.mu.Lock()
	h.done = true
	if h.timer != nil && h.timer.Stop() {
		h.runs.Done()
	}
	if h.pinging != nil {
		h.pinging()
	}
	h.mu.Unlock()
	h.runs.Wait()
}

func (h *heartbeat) stopped() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done
}

// pings reports whether this connection is pinged: the transport must be
// able to (a WebSocket can; a connection served through ServeConn is only
// watched for idleness).
func (h *heartbeat) pings() bool { return h.ws != nil && h.cfg.pinging() }
