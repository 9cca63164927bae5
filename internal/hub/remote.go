package hub

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/troupehq/troupe/rooms"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/troupehq/troupe/internal/session"
)

// A room under a Backplane: the room actor of each node with members in the
// room follows the room's log and fans every message out to its own
// members; room.publish goes to the log, never straight to the members, so
// that members on every node see one order. The local history is a mirror
// of the log (its backlog when the room started here, then every message
// since), so resume and room.history are answered without a round trip.

// Timeouts of the calls a room makes to its backplane.
const (
	followTimeout  = 10 * time.Second
	publishTimeout = 10 * time.Second
)

// maxPublishQueue bounds the room.publish messages of one room waiting for
// the backplane on one node; beyond it a publish is refused as unavailable.
const maxPublishQueue = 1024

// feedEntry is a message of the room's log, for the room actor.
type feedEntry struct {
	e   rooms.Entry
	gen uint64 // the feed it came from: entries of a stopped feed are dropped
}

// signalMsg is another node's broadcast to the room (see encodeSignal).
type signalMsg struct{ data []byte }

// remotePresence is another node's member list (nil: gone).
type remotePresence struct {
	node    string
	members []rooms.PresenceEntry
}

// follow starts following the room's log and the other nodes' presence.
// It runs when the room starts on this node, before its first join; a
// failure is remembered, and the joins are refused until the room, empty,
// stops and a later join starts it again.
func (a *roomActor) follow(ctx actor.Context) {
	st := a.st
	if err := a.refollow(ctx); err != nil {
		st.failed = err
		return
	}
	self, root := ctx.Self(), a.m.root
	stop, err := st.bp.WatchPresence(st.name, func(node string, members []rooms.PresenceEntry) {
		root.Send(self, &remotePresence{node: node, members: members})
	})
	if err == nil {
		var stopSignals func()
		stopSignals, err = st.bp.WatchSignals(st.name, func(data []byte) {
			root.Send(self, &signalMsg{data: data})
		})
		if err != nil {
			stop()
		} else {
			st.watch = func() { stop(); stopSignals() }
		}
	}
	if err != nil {
		st.feed.Stop()
		st.feed = nil
		st.failed = fmt.Errorf("%w: watching room %s: %w", rooms.ErrUnavailable, st.name, err)
	}
}

// A signal is a broadcast frame for the members of other nodes: its first
// byte says whether it is binary.
func encodeSignal(f session.Frame) []byte {
	b := make([]byte, 1+len(f.Data))
	if f.Binary {
		b[0] = 'b'
	} else {
		b[0] = 't'
	}
	copy(b[1:], f.Data)
	return b
}

func decodeSignal(data []byte) (session.Frame, bool) {
	if len(data) == 0 || (data[0] != 'b' && data[0] != 't') {
		return session.Frame{}, false
	}
	return session.Frame{Binary: data[0] == 'b', Data: data[1:]}, true
}

// fromSignal fans another node's broadcast out to this node's members.
func (st *roomState) fromSignal(m *signalMsg) {
	if f, ok := decodeSignal(m.data); ok {
		st.fanout(f, nil)
	}
}

// refollow (re)starts the feed and takes from its backlog what the room
// does not have yet.
func (a *roomActor) refollow(ctx actor.Context) error {
	st := a.st
	if st.feed != nil {
		st.feed.Stop()
		st.feed = nil
	}
	st.gen++
	gen, self, root := st.gen, ctx.Self(), a.m.root
	c, cancel := context.WithTimeout(context.Background(), followTimeout)
	defer cancel()
	feed, err := st.bp.Follow(c, st.name, func(e rooms.Entry) {
		root.Send(self, &feedEntry{e: e, gen: gen})
	})
	if err != nil {
		return fmt.Errorf("%w: following room %s: %w", rooms.ErrUnavailable, st.name, err)
	}
	if st.epoch != "" && feed.Epoch != st.epoch {
		// The log was started again: its numbering is not ours.
		st.seq = 0
		st.setHistory(a.m, a.m.newHistory(st.name))
		st.mids.reset()
	}
	st.epoch = feed.Epoch
	st.feed = feed
	for _, e := range feed.Backlog {
		if e.Seq > st.seq {
			st.append(a.m, e)
		}
	}
	return nil
}

// append takes the log's next message: into the history and to every
// member of this node.
func (st *roomState) append(m *Manager, e rooms.Entry) {
	st.flushPresence(false)
	st.seq = e.Seq
	st.hist.Append(e.Seq, e.Payload)
	st.noteMessage(m, e.Seq, e.Payload)
	st.account(m)
	if len(st.order) > 0 {
		st.fanoutMessage(messageFrame(e.Payload), e.Seq)
	}
	st.answerParked()
}

// fromFeed handles a message of the log as it arrives.
func (a *roomActor) fromFeed(ctx actor.Context, m *feedEntry) {
	st := a.st
	switch {
	case m.gen != st.gen || st.feed == nil || m.e.Seq <= st.seq:
		// From a stopped feed, or had already.
	case m.e.Seq == st.seq+1:
		st.append(a.m, m.e)
	default:
		// A gap: what is missing is in the log (unless it has already
		// been trimmed), so follow again from what the room has.
		if err := a.refollow(ctx); err != nil {
			a.m.logError(st.name, err)
			return
		}
		if m.e.Seq > st.seq {
			st.append(a.m, m.e) // trimmed from the log already: skip ahead
		}
	}
}

// catchUp follows the log again when a joiner resumes from a seq this node
// has not reached: its feed lags (for example while its consumer is being
// recreated after a server died), and answering from what it has would
// tell the client recovered: false and then send it messages it already
// has. Follow's backlog reaches the log's last message.
//
// The seq it must reach is the larger of the joiner's since (carried over
// from another node) and what this node acknowledged to the session. If
// the log cannot be read, or the copy still falls short, the join is
// refused (ErrUnavailable) rather than answered with an older view.
func (a *roomActor) catchUp(ctx actor.Context, s *session.Session, o *JoinOptions) error {
	st := a.st
	need := st.ackedSeq(s.ID())
	if o != nil && o.Since != nil && *o.Since > need && (o.Epoch == "" || o.Epoch == st.epoch) {
		need = *o.Since
	}
	if need <= st.seq {
		return nil
	}
	epoch := st.epoch
	if err := a.refollow(ctx); err != nil {
		a.m.logError(st.name, err)
		return err
	}
	if st.epoch == epoch && need > st.seq {
		return errBehind(st.name, need)
	}
	return nil
}

// fromPresence applies another node's member list.
func (a *roomActor) fromPresence(ctx actor.Context, m *remotePresence) {
	st := a.st
	old := st.remote[m.node]
	if len(m.members) == 0 {
		delete(st.remote, m.node)
	} else {
		if st.remote == nil {
			st.remote = make(map[string][]rooms.PresenceEntry)
		}
		st.remote[m.node] = m.members
	}
	st.checkMode()
	if st.counted {
		if st.remodeled || len(old) != len(m.members) {
			a.presenceChanged(ctx)
		}
		return
	}
	was := make(map[string][]byte, len(old))
	for _, e := range old {
		was[e.Key] = e.Entry
	}
	is := make(map[string]bool, len(m.members))
	n := len(st.events)
	for _, e := range m.members {
		is[e.Key] = true
		prev, ok := was[e.Key]
		switch {
		case !ok:
			st.events = append(st.events, presenceEvent{key: e.Key, join: true, entry: e.Entry})
		case !bytes.Equal(prev, e.Entry):
			st.events = append(st.events, presenceEvent{key: e.Key, entry: prev},
				presenceEvent{key: e.Key, join: true, entry: e.Entry})
		}
	}
	for _, e := range old {
		if !is[e.Key] {
			st.events = append(st.events, presenceEvent{key: e.Key, entry: e.Entry})
		}
	}
	if len(st.events) > n || st.remodeled {
		a.presenceChanged(ctx)
	}
}

// announce tells the other nodes this node's members of the room.
func (st *roomState) announce() {
	list := make([]rooms.PresenceEntry, len(st.order))
	for i, s := range st.order {
		list[i] = rooms.PresenceEntry{Key: s.ID(), Entry: st.appendMember(nil, s)}
	}
	_ = st.bp.Announce(st.name, list)
}

// remoteNodes are the other nodes with members in the room, in order.
func (st *roomState) remoteNodes() []string {
	nodes := make([]string, 0, len(st.remote))
	for n := range st.remote {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	return nodes
}

// unfollow stops the feed and the presence watch, and tells the other nodes
// that this node has no members left: the room is stopping here.
func (st *roomState) unfollow() {
	if st.feed != nil {
		st.feed.Stop()
		st.feed = nil
	}
	if st.watch != nil {
		st.watch()
		st.watch = nil
	}
	st.remote = nil
	if st.failed == nil {
		_ = st.bp.Announce(st.name, nil)
	}
}

// publisher is a room's queue of room.publish messages waiting for the
// backplane, drained in order by a goroutine that exists only while the
// queue is not empty: one sender's messages keep their order, and the
// room actor never waits for the network.
type publisher struct {
	mu      sync.Mutex
	queue   []*publishReq
	running bool
	acked   map[string]uint64 // by session ID: the highest seq acknowledged (see noteAcked)
}

// enqueue queues r, or refuses it when the queue is full.
func (st *roomState) enqueuePublish(m *Manager, r *publishReq) {
	p := &st.pub
	p.mu.Lock()
	if len(p.queue) >= maxPublishQueue {
		p.mu.Unlock()
		r.refuse(m, st, "unavailable", "room "+st.name+" is not taking messages now; try again")
		return
	}
	p.queue = append(p.queue, r)
	start := !p.running
	p.running = true
	p.mu.Unlock()
	if start {
		m.publishers.Add(1)
		go st.drainPublish(m)
	}
}

func (st *roomState) drainPublish(m *Manager) {
	defer m.publishers.Done()
	p := &st.pub
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.running = false
			p.queue = nil
			p.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(p.queue) && n < maxPublishBatch && (n == 0 || size+len(p.queue[n].body) <= maxPublishBatchBytes) {
			size += len(p.queue[n].body)
			n++
		}
		batch := append([]*publishReq(nil), p.queue[:n]...)
		clear(p.queue[:n])
		p.queue = p.queue[n:]
		p.mu.Unlock()
		st.publishRemote(m, batch)
	}
}

// Bounds of what one call to Backplane.Publish carries.
const (
	maxPublishBatch      = 64
	maxPublishBatchBytes = 64 << 10
)

// appendBatch appends a batch to the room's log and answers its senders.
// The messages reach the members, their senders included, through the feed
// of each node. With mids in the batch it may append nothing and tell why
// instead (see publishRemote): the room had not seen the log up to
// waitFor yet, or some of the batch (dup, by index) were published before.
func (st *roomState) appendBatch(m *Manager, batch []*publishReq) (waitFor uint64, dup []uint64) {
	check := false
	for _, r := range batch {
		check = check || r.mid != ""
	}
	check = check && m.dedupe()
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	first, err := st.bp.Publish(ctx, st.name, len(batch), func(first uint64) [][]byte {
		if check {
			if dup == nil {
				dup = make([]uint64, len(batch))
			}
			covered, clean := st.coverBatch(m, first, batch, dup)
			if !covered || !clean {
				waitFor = 0
				if !covered {
					waitFor = first - 1
				}
				return nil // appends nothing
			}
			waitFor = 0
		}
		out := make([][]byte, len(batch))
		for i, r := range batch {
			out[i] = r.payload(st, first+uint64(i))
		}
		return out
	})
	if err == nil && m.dedupe() {
		st.notePublished(m, first, batch)
	}
	if err != nil && check && (waitFor > 0 || hasDup(dup)) {
		return waitFor, dup
	}
	for i, r := range batch {
		switch {
		case err != nil:
			r.refuse(m, st, "unavailable", "room "+st.name+": message not taken: "+err.Error())
		case r.s != nil:
			st.noteAcked(r.s.ID(), first+uint64(i))
			if len(r.id) > 0 {
				_ = r.s.SendText(publishedFrame(st.name, first+uint64(i), r.id))
			}
		}
	}
	return 0, nil
}
