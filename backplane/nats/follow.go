package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/troupehq/troupe/rooms"
)

const (
	// feedInactive is how long the server keeps a feed's consumer after
	// the client vanished without deleting it.
	feedInactive = time.Minute
)

// Follow returns room's messages that the stream holds, oldest first, and
// then passes each newer one to deliver, in order, from one goroutine at a
// time, until Feed.Stop.
//
// It reads the room's subject with one ordered consumer from the first
// message on: the messages the consumer counted as pending when it was
// created form the backlog, the rest go to deliver. The ordered consumer
// recreates itself after a gap, a reconnect or the loss of its server,
// resuming after the last message it passed on. deliver is not called
// before Follow has returned.
//
// Epoch is the stream's creation time: deleting the stream (and with it
// every room's numbering) changes it.
func (b *Backplane) Follow(ctx context.Context, room string, deliver func(rooms.Entry)) (*rooms.Feed, error) {
	if b.closed.Load() {
		return nil, b.errClosed()
	}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	subj := roomSubject(room)

	var s jetstream.Stream
	if err := b.retry(ctx, func(actx context.Context) (err error) {
		s, err = b.js.Stream(actx, b.cfg.Stream)
		return err
	}); err != nil {
		return nil, err
	}
	epoch := strconv.FormatInt(s.CachedInfo().Created.UnixNano(), 36)
	// The consumer may read a replica that lags behind the leader (a
	// server that has just restarted and is catching up): the backlog is
	// complete only once it reaches the last message the leader has.
	_, target, err := b.lastOf(ctx, subj)
	if err != nil {
		return nil, err
	}
	var cons jetstream.Consumer
	if err := b.retry(ctx, func(actx context.Context) (err error) {
		cons, err = s.OrderedConsumer(actx, jetstream.OrderedConsumerConfig{
			FilterSubjects:    []string{subj},
			DeliverPolicy:     jetstream.DeliverAllPolicy,
			InactiveThreshold: feedInactive,
		})
		return err
	}); err != nil {
		return nil, err
	}

	f := &feed{
		b:        b,
		room:     room,
		deliver:  deliver,
		want:     cons.CachedInfo().NumPending,
		target:   target,
		ready:    make(chan []rooms.Entry, 1),
		returned: make(chan struct{}),
		stopped:  make(chan struct{}),
		cons:     cons,
	}
	f.live = f.want == 0 && target == 0
	waitBacklog := !f.live
	f.st = b.acquire(room)
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		b.release(room, f.st)
		b.deleteConsumer(cons)
		return nil, b.errClosed()
	}
	b.feeds[f] = struct{}{}
	b.mu.Unlock()

	cc, err := cons.Consume(f.handle,
		jetstream.PullHeartbeat(b.cfg.FeedHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, natsgo.ErrConnectionClosed) {
				b.log.Debug("feed", "room", room, "err", err)
			}
		}))
	if err != nil {
		f.stop()
		if errors.Is(err, natsgo.ErrConnectionClosed) || errors.Is(err, natsgo.ErrConnectionDraining) {
			return nil, b.errClosed()
		}
		return nil, fmt.Errorf("nats: follow %q: %w", room, err)
	}
	f.ccMu.Lock()
	f.cc = cc
	stopped := f.isStopped()
	f.ccMu.Unlock()
	if stopped {
		cc.Stop()
		return nil, b.errClosed()
	}

	var backlog []rooms.Entry
	if waitBacklog { // f.live belongs to handle by now
		select {
		case backlog = <-f.ready:
		case <-ctx.Done():
			f.stop()
			return nil, unavailable(fmt.Errorf("follow %q: backlog: %w", room, ctx.Err()))
		case <-f.stopped:
			return nil, b.errClosed()
		}
	}
	close(f.returned)
	return &rooms.Feed{Epoch: epoch, Backlog: backlog, Stop: f.stop}, nil
}

// retry runs op until it succeeds, fails for good, or ctx ends, each
// attempt bounded so that one lost request does not eat the whole ctx.
func (b *Backplane) retry(ctx context.Context, op func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(actx)
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, natsgo.ErrConnectionClosed), errors.Is(err, natsgo.ErrConnectionDraining):
			return b.errClosed()
		case !retryable(err):
			return fmt.Errorf("nats: %w", err)
		}
		select {
		case <-ctx.Done():
			return unavailable(fmt.Errorf("%w (last error: %v)", ctx.Err(), err))
		case <-time.After(backoff(attempt)):
		}
	}
}

// feed is one Follow: it splits the consumer's messages into the backlog
// and the live ones.
type feed struct {
	b       *Backplane
	room    string
	st      *roomState
	deliver func(rooms.Entry)
	cons    jetstream.Consumer

	mu      sync.Mutex // held through handle: one call at a time, even across consumer resets
	last    uint64     // stream sequence of the last message taken
	want    uint64     // messages pending when the consumer began: the backlog
	target  uint64     // the room sequence the stream's leader had: the backlog reaches it
	seen    uint64     // the room sequence of the last message taken
	got     uint64
	live    bool
	backlog []rooms.Entry

	ready    chan []rooms.Entry // the backlog, once complete
	returned chan struct{}      // closed when Follow returns: deliver may run
	stopped  chan struct{}
	once     sync.Once

	ccMu sync.Mutex
	cc   jetstream.ConsumeContext
}

func (f *feed) isStopped() bool {
	select {
	case <-f.stopped:
		return true
	default:
		return false
	}
}

func (f *feed) handle(m jetstream.Msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isStopped() {
		return
	}
	md, err := m.Metadata()
	if err != nil {
		f.b.log.Warn("feed: message without metadata", "room", f.room, "err", err)
		return
	}
	if md.Sequence.Stream <= f.last {
		return // seen before a consumer reset
	}
	f.last = md.Sequence.Stream
	entries, ok := f.entries(m, md.Sequence.Stream)
	if ok {
		f.st.note(md.Sequence.Stream, entries[len(entries)-1].Seq)
	}
	if ok {
		f.seen = entries[len(entries)-1].Seq
	}
	if !f.live {
		if ok {
			f.backlog = append(f.backlog, entries...)
		}
		f.got++
		if (f.got >= f.want || md.NumPending == 0) && f.seen >= f.target {
			f.live = true
			f.ready <- f.backlog
			f.backlog = nil
		}
		return
	}
	if !ok {
		return
	}
	select {
	case <-f.returned:
	case <-f.stopped:
		return
	}
	for _, e := range entries {
		f.deliver(e)
	}
}

// entries are the room messages of one stored message.
func (f *feed) entries(m jetstream.Msg, streamSeq uint64) ([]rooms.Entry, bool) {
	first, n, err := batchHeaders(m.Headers())
	var payloads [][]byte
	if err == nil {
		payloads, err = decodeBatch(m.Data(), n)
	}
	if err != nil {
		f.b.log.Warn("feed: message skipped", "room", f.room, "stream_seq", streamSeq, "err", err)
		return nil, false
	}
	out := make([]rooms.Entry, n)
	for i, p := range payloads {
		out[i] = rooms.Entry{Seq: first + uint64(i), Payload: p}
	}
	return out, true
}

// stop ends the feed. It may run more than once, from deliver itself, and
// concurrently with Close: it waits for nothing.
func (f *feed) stop() {
	f.once.Do(func() {
		f.ccMu.Lock()
		close(f.stopped)
		cc := f.cc
		f.ccMu.Unlock()
		b := f.b
		b.stopConsumer(cc, f.cons)
		b.mu.Lock()
		delete(b.feeds, f)
		b.mu.Unlock()
		b.release(f.room, f.st)
	})
}

// deleteConsumer asks the server to drop a feed's consumer now rather than
// after feedInactive, without waiting for the answer: Stop must not block.
func (b *Backplane) deleteConsumer(cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil || b.nc.IsClosed() {
		return
	}
	subj := "$JS.API.CONSUMER.DELETE." + b.cfg.Stream + "." + info.Name
	_ = b.nc.PublishRequest(subj, b.nc.NewRespInbox(), nil)
}

// stopConsumer stops a feed's consumer (cc may be nil if it never
// started) and deletes it on the server, without waiting: the ordered
// consumer's Stop and CachedInfo wait for a reset in progress (recreating
// its server-side consumer, retried with backoff), which kept a stopping
// room, and with it a node's graceful shutdown, waiting for seconds. Close
// waits for these once the connection is gone.
func (b *Backplane) stopConsumer(cc jetstream.ConsumeContext, cons jetstream.Consumer) {
	stop := func() {
		if cc != nil {
			cc.Stop()
		}
		b.deleteConsumer(cons)
	}
	b.mu.Lock()
	if b.stopsDone {
		b.mu.Unlock()
		stop()
		return
	}
	b.stops.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.stops.Done()
		stop()
	}()
}
