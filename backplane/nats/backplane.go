// Package nats implements rooms.Backplane on NATS JetStream, so that one
// room can span several Troupe nodes.
//
// Every room is one subject of one stream, troupe.room.<token>, where the
// token is the room name in unpadded URL-safe base64 (any name is then a
// valid subject token). The stream keeps the newest HistoryLength messages
// of each room; each message carries the room's sequence number in a
// header. Nodes append with optimistic concurrency on the subject's last
// stream sequence, so the room numbering stays gap-free whichever node
// publishes, and follow a room with an ordered consumer filtered on its
// subject.
//
// Presence travels on core NATS, which stores nothing: each node repeats
// its member lists every PresenceInterval on troupe.presence.<token>, and
// the others forget a node's list when they stop hearing it.
//
// The nodes can connect to a NATS cluster that runs elsewhere
// (Options.URL), or be that cluster, each starting a nats-server in its own
// process (Options.Embedded) with routes to the others.
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/troupehq/troupe/rooms"
)

// ErrClosed is returned (wrapped together with rooms.ErrUnavailable) by a
// Backplane after Close.
var ErrClosed = errors.New("nats: backplane closed")

var _ rooms.Backplane = (*Backplane)(nil)

// Backplane is a rooms.Backplane on NATS JetStream. Open one per node.
type Backplane struct {
	cfg    config
	log    *slog.Logger
	srv    *server.Server // embedded server, nil when not ours
	ownSrv bool
	nc     *natsgo.Conn
	js     jetstream.JetStream
	stream jetstream.Stream

	// incarnation tells this process's message IDs from those of an
	// earlier run of the same node, which the stream may still remember.
	incarnation string
	msgCounter  atomic.Uint64

	closed    atomic.Bool
	quit      chan struct{}
	wg        sync.WaitGroup // presence loop and watches
	stops     sync.WaitGroup // feeds' consumers being stopped (stopConsumer)
	closeOnce sync.Once
	closeErr  error
	connDone  chan struct{}

	mu        sync.Mutex
	stopsDone bool                  // Close waits for stops: no more may start
	roomsMu   map[string]*roomState // rooms being published to or followed
	feeds     map[*feed]struct{}
	watches   map[*watch]struct{}

	// testPublish replaces the publish request in tests, to lose an
	// acknowledgement on purpose.
	testPublish func(context.Context, *natsgo.Msg) (*jetstream.PubAck, error)

	presMu    sync.Mutex
	announced map[string][]byte // token -> encoded non-empty announcement

	peersMu sync.Mutex
	peers   map[string]time.Time // other nodes, when last heard (see sync.go)
}

// Open connects to JetStream (starting the embedded server first, if
// asked), creates or updates the stream, and starts announcing presence.
// In a cluster it waits, as long as ctx allows, until JetStream has
// elected its leaders and holds the stream with all its replicas.
func Open(ctx context.Context, opts Options) (*Backplane, error) {
	c, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Backplane{
		cfg:         c,
		log:         c.Logger.With("component", "nats", "node", c.Node),
		incarnation: nuid.Next()[:10],
		quit:        make(chan struct{}),
		connDone:    make(chan struct{}),
		roomsMu:     map[string]*roomState{},
		feeds:       map[*feed]struct{}{},
		watches:     map[*watch]struct{}{},
		announced:   map[string][]byte{},
		peers:       map[string]time.Time{},
	}
	switch {
	case c.Embedded != nil:
		b.srv, err = startServer(ctx, &b.cfg)
		if err != nil {
			return nil, err
		}
		b.ownSrv = true
	case c.Server != nil:
		b.srv = c.Server
	}
	if err := b.connect(ctx); err != nil {
		b.shutdownServer()
		return nil, err
	}
	if err := b.ensureStream(ctx); err != nil {
		b.nc.Close()
		<-b.connDone
		b.shutdownServer()
		return nil, err
	}
	if _, err := b.nc.Subscribe(syncPrefix+"*", b.answerSync); err != nil {
		b.nc.Close()
		<-b.connDone
		b.shutdownServer()
		return nil, fmt.Errorf("nats: %w", err)
	}
	if _, err := b.nc.Subscribe(nodesSubject, b.heardNode); err != nil {
		b.nc.Close()
		<-b.connDone
		b.shutdownServer()
		return nil, fmt.Errorf("nats: %w", err)
	}
	b.heartbeat()
	b.wg.Add(1)
	go b.presenceLoop()
	return b, nil
}

func (b *Backplane) connect(ctx context.Context) error {
	url := b.cfg.URL
	nopts := []natsgo.Option{
		natsgo.Name("troupe " + b.cfg.Node),
		// Never give up: a node outlives any one server of the cluster.
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250 * time.Millisecond),
		natsgo.ClosedHandler(func(*natsgo.Conn) { close(b.connDone) }),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err != nil && !b.closed.Load() {
				b.log.Warn("disconnected from NATS", "err", err)
			}
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			b.log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			b.log.Warn("NATS error", "subject", subj, "err", err)
		}),
	}
	if b.srv != nil {
		url = ""
		nopts = append(nopts, natsgo.InProcessServer(b.srv))
	}
	nopts = append(nopts, b.cfg.NATSOptions...)
	nc, err := natsgo.Connect(url, nopts...)
	if err != nil {
		return fmt.Errorf("nats: connect: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		<-b.connDone
		return fmt.Errorf("nats: %w", err)
	}
	b.nc, b.js = nc, js
	if b.cfg.Replicas <= 0 {
		clustered := nc.ConnectedClusterName() != ""
		if b.srv != nil {
			clustered = b.srv.JetStreamIsClustered()
		}
		b.cfg.Replicas = 1
		if clustered {
			b.cfg.Replicas = 3
		}
	}
	return nil
}

// ensureStream creates the stream or brings its configuration up to date,
// retrying while JetStream is not ready yet (no meta leader, replicas not
// all joined), as long as ctx allows.
func (b *Backplane) ensureStream(ctx context.Context) error {
	storage := jetstream.FileStorage
	if b.cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	sc := jetstream.StreamConfig{
		Name:              b.cfg.Stream,
		Description:       "Troupe rooms: one subject per room, its newest messages",
		Subjects:          []string{roomPrefix + "*"},
		Retention:         jetstream.LimitsPolicy,
		MaxMsgsPerSubject: int64(b.cfg.HistoryLength),
		MaxAge:            b.cfg.MaxAge,
		Discard:           jetstream.DiscardOld,
		Duplicates:        duplicateWindow,
		Replicas:          b.cfg.Replicas,
		Storage:           storage,
	}
	var last error
	for attempt := 0; ; attempt++ {
		// While there is no meta leader requests go unanswered; ask again
		// soon, then less eagerly in case the cluster is merely slow.
		actx, cancel := context.WithTimeout(ctx, min(250*time.Millisecond<<min(attempt, 3), attemptTimeout))
		s, err := b.js.CreateOrUpdateStream(actx, sc)
		cancel()
		if err == nil {
			b.stream = s
			return nil
		}
		last = err
		if !retryable(err) && !noPeersYet(err) {
			return fmt.Errorf("nats: stream %s: %w", b.cfg.Stream, err)
		}
		if attempt%10 == 9 {
			b.log.Info("waiting for JetStream", "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nats: stream %s: %w: %w (last error: %v)", b.cfg.Stream, rooms.ErrUnavailable, ctx.Err(), last)
		case <-time.After(backoff(attempt)):
		}
	}
}

// Node names this node.
func (b *Backplane) Node() string { return b.cfg.Node }

// Server returns the nats-server this backplane runs or connects to in
// process, nil when it connects by URL. Another Backplane can share it
// (Options.Server).
func (b *Backplane) Server() *server.Server { return b.srv }

// Replicas is the replication factor the stream was opened with, after
// defaults and clamping.
func (b *Backplane) Replicas() int { return b.cfg.Replicas }

// Close leaves gracefully: it withdraws this node's member lists, so the
// other nodes drop its members at once instead of after PresenceTTL; stops
// every feed and watch; hands the stream's leadership to another server if
// this node's embedded server holds it, so that rooms pause only for a
// moment during a rolling restart; then drains the connection and shuts the
// embedded server down. No goroutine of the backplane outlives it.
func (b *Backplane) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close() })
	return b.closeErr
}

func (b *Backplane) close() error {
	b.mu.Lock()
	b.closed.Store(true)
	feeds := make([]*feed, 0, len(b.feeds))
	for f := range b.feeds {
		feeds = append(feeds, f)
	}
	watches := make([]*watch, 0, len(b.watches))
	for w := range b.watches {
		watches = append(watches, w)
	}
	b.mu.Unlock()

	close(b.quit)
	b.withdrawPresence()
	for _, f := range feeds {
		f.stop()
	}
	for _, w := range watches {
		w.stop()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if b.nc.IsConnected() {
		// Get the withdrawals out before the connection goes.
		if err := b.nc.FlushWithContext(ctx); err != nil {
			b.log.Warn("flush on close", "err", err)
		}
		if b.ownSrv {
			b.stepDown(ctx)
		}
		if err := b.nc.Drain(); err != nil {
			b.nc.Close()
		}
	} else {
		// Nothing would get through; do not wait for a server that is gone.
		b.nc.Close()
	}
	select {
	case <-b.connDone:
	case <-ctx.Done():
		b.nc.Close()
		<-b.connDone
	}
	b.wg.Wait()
	b.mu.Lock()
	b.stopsDone = true
	b.mu.Unlock()
	// A consumer that was resetting finishes its current backoff first
	// (up to 10 s in nats.go); the connection is gone, so nothing more
	// comes of it.
	stopped := make(chan struct{})
	go func() { b.stops.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		b.log.Warn("feeds still stopping after Close")
	}
	b.shutdownServer()
	return nil
}

// stepDown moves the stream's leadership off this node's server and waits
// (briefly) until another server leads it, so that publishes resume as soon
// as this server is gone instead of after an election timeout. It does
// nothing when no other replica is current, as none could take over.
func (b *Backplane) stepDown(ctx context.Context) {
	if b.cfg.Replicas < 2 || !b.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, b.cfg.Stream) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	me := b.srv.Name()
	s, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		return
	}
	successor := false
	if ci := s.CachedInfo().Cluster; ci != nil {
		for _, p := range ci.Replicas {
			successor = successor || (p.Current && !p.Offline && p.Name != me)
		}
	}
	if !successor {
		return
	}
	subj := "$JS.API.STREAM.LEADER.STEPDOWN." + b.cfg.Stream
	if _, err := b.nc.RequestWithContext(ctx, subj, nil); err != nil {
		b.log.Warn("stream leader stepdown", "err", err)
		return
	}
	for ctx.Err() == nil {
		// Requests sent while there is no leader go unanswered: ask often.
		actx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		info, err := s.Info(actx)
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != me {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (b *Backplane) shutdownServer() {
	if b.ownSrv && b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
		b.cfg.removeTempStore()
	}
}

// bound gives ctx the default deadline when it has none.
func (b *Backplane) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, b.cfg.Timeout)
}

// unavailable wraps err so that errors.Is(err, rooms.ErrUnavailable) holds.
func unavailable(err error) error {
	if errors.Is(err, rooms.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("nats: %w: %w", rooms.ErrUnavailable, err)
}

func (b *Backplane) errClosed() error {
	return fmt.Errorf("%w: %w", rooms.ErrUnavailable, ErrClosed)
}

// retryable reports whether err says JetStream could not be reached or
// answer now (no leader, a cluster still forming, connection lost, timeout:
// JetStream answers 503 for these), as opposed to a refusal that would be
// repeated.
func retryable(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, natsgo.ErrTimeout),
		errors.Is(err, natsgo.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, natsgo.ErrConnectionReconnecting),
		errors.Is(err, natsgo.ErrDisconnected):
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.Code == 408
	}
	return false
}

// errCodeNoPeers is nats-server's JSClusterNoPeersErrF: no servers to
// place the stream's replicas on.
const errCodeNoPeers jetstream.ErrorCode = 10005

// noPeersYet reports the refusal of a stream whose replicas cannot be
// placed, which a cluster that is still forming answers for a moment: its
// meta leader has been elected before every server registered with it.
func noPeersYet(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeNoPeers
}

// backoff is the wait before retry attempt+1: short at first, as leader
// elections take a few hundred milliseconds, then capped.
func backoff(attempt int) time.Duration {
	d := 25 * time.Millisecond << min(attempt, 4)
	return min(d, 400*time.Millisecond)
}
