package nats

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/troupehq/troupe/rooms"
)

// announcement is what a node says on troupe.presence.<token>: its whole
// list, so that any one message is enough to catch up and a lost one is
// repaired by the next.
type announcement struct {
	Node    string                `json:"node"`
	Members []rooms.PresenceEntry `json:"members"`
}

// syncRequest, on troupe.presence-sync.<token>, asks the other nodes to
// repeat their list of the room now: a watch that begins learns the
// members within a round trip instead of a PresenceInterval.
type syncRequest struct {
	Node string `json:"node"`
}

// watchBuffer is how many announcements a watch may have waiting. Beyond
// it NATS drops them, which costs at most one PresenceInterval of
// staleness, since every announcement carries the whole list.
const watchBuffer = 1024

// Announce replaces this node's member list of room and sends it at once.
// The backplane repeats a non-empty list every PresenceInterval until it is
// replaced; an empty one is sent once and tells the others to drop this
// node's members now.
func (b *Backplane) Announce(room string, members []rooms.PresenceEntry) error {
	if members == nil {
		members = []rooms.PresenceEntry{}
	}
	data, err := json.Marshal(announcement{Node: b.cfg.Node, Members: members})
	if err != nil {
		return err
	}
	token := roomToken(room)
	// presMu orders this against the periodic repeat, which must not send
	// an older list after this one.
	b.presMu.Lock()
	defer b.presMu.Unlock()
	if b.closed.Load() {
		return b.errClosed()
	}
	if len(members) == 0 {
		delete(b.announced, token)
	} else {
		b.announced[token] = data
	}
	return b.nc.Publish(presencePrefix+token, data)
}

func (b *Backplane) presenceLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.PresenceInterval)
	defer t.Stop()
	for {
		select {
		case <-b.quit:
			return
		case <-t.C:
			b.heartbeat()
			b.presMu.Lock()
			for token, data := range b.announced {
				_ = b.nc.Publish(presencePrefix+token, data)
			}
			b.presMu.Unlock()
		}
	}
}

// answerSync repeats this node's list of a room for a node whose watch
// just began.
func (b *Backplane) answerSync(m *natsgo.Msg) {
	var req syncRequest
	if json.Unmarshal(m.Data, &req) != nil || req.Node == b.cfg.Node {
		return
	}
	token := strings.TrimPrefix(m.Subject, syncPrefix)
	b.presMu.Lock()
	defer b.presMu.Unlock()
	if b.closed.Load() {
		return
	}
	data, ok := b.announced[token]
	if m.Reply != "" {
		// A join's SyncPresence: every node answers, with its list or
		// none.
		if !ok {
			data, _ = json.Marshal(announcement{Node: b.cfg.Node, Members: []rooms.PresenceEntry{}})
		}
		_ = m.Respond(data)
		return
	}
	if ok {
		_ = b.nc.Publish(presencePrefix+token, data)
	}
}

// withdrawPresence sends an empty list for every room this node announced,
// so that the others drop its members at once rather than after the TTL.
func (b *Backplane) withdrawPresence() {
	data, _ := json.Marshal(announcement{Node: b.cfg.Node, Members: []rooms.PresenceEntry{}})
	b.presMu.Lock()
	defer b.presMu.Unlock()
	for token := range b.announced {
		_ = b.nc.Publish(presencePrefix+token, data)
	}
	clear(b.announced)
}

// WatchPresence passes to fn every other node's list of room when it
// changes, and nil when the node announced an empty list or was not heard
// for PresenceTTL. fn runs on one goroutine per watch, in the order the
// lists arrived; this node's own announcements never reach it. The stop
// function may be called more than once, and from fn; it does not wait for
// a call of fn in progress.
func (b *Backplane) WatchPresence(room string, fn func(node string, members []rooms.PresenceEntry)) (func(), error) {
	if b.closed.Load() {
		return nil, b.errClosed()
	}
	token := roomToken(room)
	w := &watch{
		b:     b,
		fn:    fn,
		ch:    make(chan *natsgo.Msg, watchBuffer),
		done:  make(chan struct{}),
		lists: map[string]*heard{},
	}
	sub, err := b.nc.ChanSubscribe(presencePrefix+token, w.ch)
	if err != nil {
		return nil, unavailable(err)
	}
	w.sub = sub
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		_ = sub.Unsubscribe()
		return nil, b.errClosed()
	}
	b.watches[w] = struct{}{}
	b.wg.Add(1)
	b.mu.Unlock()
	go w.run()

	// The subscription went out on this connection before the request, so
	// the server routes the answers to it.
	req, _ := json.Marshal(syncRequest{Node: b.cfg.Node})
	if err := b.nc.Publish(syncPrefix+token, req); err != nil {
		b.log.Debug("presence sync request", "room", room, "err", err)
	}
	return w.stop, nil
}

// watch is one WatchPresence.
type watch struct {
	b     *Backplane
	fn    func(node string, members []rooms.PresenceEntry)
	sub   *natsgo.Subscription
	ch    chan *natsgo.Msg
	done  chan struct{}
	once  sync.Once
	lists map[string]*heard // owned by run
}

// heard is the last list heard from a node, as sent, and when.
type heard struct {
	raw []byte
	at  time.Time
}

func (w *watch) run() {
	defer w.b.wg.Done()
	t := time.NewTicker(max(w.b.cfg.PresenceTTL/4, 5*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case m := <-w.ch:
			w.receive(m, time.Now())
		case now := <-t.C:
			w.expire(now)
		}
	}
}

func (w *watch) receive(m *natsgo.Msg, now time.Time) {
	var a struct {
		Node    string          `json:"node"`
		Members json.RawMessage `json:"members"`
	}
	if json.Unmarshal(m.Data, &a) != nil || a.Node == "" || a.Node == w.b.cfg.Node {
		return
	}
	h := w.lists[a.Node]
	if h != nil && bytes.Equal(h.raw, a.Members) {
		h.at = now // a repeat: nothing changed
		return
	}
	var members []rooms.PresenceEntry
	if err := json.Unmarshal(a.Members, &members); err != nil {
		w.b.log.Warn("presence: bad announcement", "node", a.Node, "err", err)
		return
	}
	if len(members) == 0 {
		if h != nil {
			delete(w.lists, a.Node)
			w.call(a.Node, nil)
		}
		return
	}
	w.lists[a.Node] = &heard{raw: a.Members, at: now}
	w.call(a.Node, members)
}

func (w *watch) expire(now time.Time) {
	for node, h := range w.lists {
		if now.Sub(h.at) >= w.b.cfg.PresenceTTL {
			delete(w.lists, node)
			w.call(node, nil)
		}
	}
}

func (w *watch) call(node string, members []rooms.PresenceEntry) {
	select {
	case <-w.done:
	default:
		w.fn(node, members)
	}
}

func (w *watch) stop() {
	w.once.Do(func() {
		close(w.done)
		_ = w.sub.Unsubscribe()
		w.b.mu.Lock()
		delete(w.b.watches, w)
		w.b.mu.Unlock()
	})
}
