package session

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/troupehq/troupe/internal/gopool"
	"github.com/troupehq/troupe/transport"
)

// System owns the protoactor actor system that session (and room) actors
// live in, and the logger they report to.
type System struct {
	as       *actor.ActorSystem
	root     *actor.RootContext
	logger   *slog.Logger
	sessions atomic.Int64

	// pool runs the session actors' mailboxes and writers (see gopool).
	pool gopool.Pool

	props *actor.Props // of every session actor

	// ended holds the OnSessionEnd hooks, replaced whole on each change so
	// that Finish reads it without a lock.
	endMu sync.Mutex
	ended atomic.Pointer[[]*endHook]

	framesOut atomic.Uint64
	bytesOut  atomic.Uint64
	overflows atomic.Uint64
	resyncs   atomic.Uint64
}

// Sent returns how many frames and bytes sessions have written (a
// coalesced batch counts each message in it).
func (sys *System) Sent() (frames, bytes uint64) { return sys.framesOut.Load(), sys.bytesOut.Load() }

// Overflows returns how many sessions were closed as slow consumers.
func (sys *System) Overflows() uint64 { return sys.overflows.Load() }

// Resyncs returns how many room.resync frames sessions were sent.
func (sys *System) Resyncs() uint64 { return sys.resyncs.Load() }

// NewSystem creates an actor system whose own logging goes to logger, with
// its informational chatter (start-up, dead letters) held back at Warn
// unless logger is enabled for Debug.
func NewSystem(logger *slog.Logger) *System {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	quiet := slog.New(&minLevel{h: logger.Handler(), min: slog.LevelWarn}).With("lib", "protoactor")
	as := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }),
		// The dead-letter throttle holds a goroutine for one interval.
		actor.WithDeadLetterThrottleInterval(100*time.Millisecond),
	)
	sys := &System{as: as, root: as.Root, logger: logger}
	sys.props = actor.PropsFromProducer(func() actor.Actor { return new(sessionActor) },
		actor.WithDispatcher(poolDispatcher{&sys.pool}))
	return sys
}

// Root returns the root context used to send to and spawn actors.
func (sys *System) Root() *actor.RootContext { return sys.root }

// Logger returns the logger the system reports to.
func (sys *System) Logger() *slog.Logger { return sys.logger }

// Sessions returns how many sessions are alive (spawned and not finished).
func (sys *System) Sessions() int64 { return sys.sessions.Load() }

// Shutdown stops the actor system. Stop every actor first: protoactor's
// Shutdown stops none.
func (sys *System) Shutdown() {
	sys.as.Shutdown()
	sys.pool.Stop()
}

// poolDispatcher runs mailboxes on the system's pool, where protoactor's
// default starts a goroutine each time a mailbox gets messages.
type poolDispatcher struct{ p *gopool.Pool }

func (d poolDispatcher) Schedule(fn func()) { d.p.Go(fn) }

// Throughput is protoactor's default: messages per mailbox run.
func (poolDispatcher) Throughput() int { return 300 }

// NewSession spawns a session actor writing to conn.
func (sys *System) NewSession(conn transport.Conn, info Info, opts Options) *Session {
	id := info.ID
	if id == "" {
		id = uuid.NewString()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		id:     id,
		sys:    sys,
		conn:   conn,
		opts:   opts.withDefaults(),
		header: packHeader(info.Header),
		remote: info.RemoteAddr,
		proto:  info.Subprotocol,
		ctx:    ctx,
		cancel: cancel,
	}
	// One Props serves every session, so its producer cannot know the
	// session: the first message gives it to the actor. Props of its own
	// would cost each session about 240 bytes for as long as it lives. A
	// session actor is never restarted (its Receive recovers), so nothing
	// else ever builds it.
	s.pid = sys.root.Spawn(sys.props)
	sys.root.Send(s.pid, s)
	sys.sessions.Add(1)
	return s
}

// endHook is one OnSessionEnd registration; its address identifies it.
type endHook struct{ fn func(*Session) }

// OnSessionEnd registers fn to be called once for every session of this
// system that finishes, on the goroutine that finishes it, after the
// session stopped accepting frames (IsOpen reports false) and before its
// OnClose. It returns a function that removes the registration.
//
// It is how the rooms learn that a member is gone. A protoactor Watch per
// membership would do the same, but it gives every watched session actor a
// watcher set and context extensions, about 0.7 KiB for as long as the
// session lives; a hook costs nothing per session. A room that checks
// IsOpen after recording a member, and a hook that reads those records,
// cannot both miss each other: Finish marks the session closed before it
// calls the hooks.
func (sys *System) OnSessionEnd(fn func(*Session)) (remove func()) {
	h := &endHook{fn: fn}
	sys.endMu.Lock()
	defer sys.endMu.Unlock()
	var hooks []*endHook
	if p := sys.ended.Load(); p != nil {
		hooks = append(hooks, *p...)
	}
	hooks = append(hooks, h)
	sys.ended.Store(&hooks)
	return func() {
		sys.endMu.Lock()
		defer sys.endMu.Unlock()
		p := sys.ended.Load()
		if p == nil {
			return
		}
		var kept []*endHook
		for _, x := range *p {
			if x != h {
				kept = append(kept, x)
			}
		}
		sys.ended.Store(&kept)
	}
}

// sessionEnded runs the OnSessionEnd hooks for s.
func (sys *System) sessionEnded(s *Session) {
	if p := sys.ended.Load(); p != nil {
		for _, h := range *p {
			sys.SafeCall(func() { h.fn(s) })
		}
	}
}

// SafeCall runs user code from inside an actor; a panic is logged rather
// than restarting the actor.
func (sys *System) SafeCall(fn func()) {
	defer func() {
		if r := recover(); r != nil {
			sys.logger.Error("troupe: panic in callback", "panic", r)
		}
	}()
	fn()
}

// minLevel is a slog handler that drops records below min.
type minLevel struct {
	h   slog.Handler
	min slog.Level
}

func (m *minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}
func (m *minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }
func (m *minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return &minLevel{h: m.h.WithAttrs(a), min: m.min}
}
func (m *minLevel) WithGroup(g string) slog.Handler {
	return &minLevel{h: m.h.WithGroup(g), min: m.min}
}
