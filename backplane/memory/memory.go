// Package memory is a rooms.Backplane that joins the servers of one
// process: each node (Cluster.Node) stands for a server node, and the
// Cluster is the log and presence they share. It exists so that everything a multi-node
// deployment does (one order, one gap-free sequence, resume on another node,
// presence across nodes, a node going away) can be tested without a
// network; github.com/troupehq/troupe/backplane/nats is the one to deploy.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupehq/troupe/rooms"
)

// ErrClosed is returned by the backplane methods of a closed node.
var ErrClosed = errors.New("memory: node closed")

// Cluster is the shared state of its nodes: a log per room, bounded to the
// history length, and every node's announced members.
type Cluster struct {
	historyLength int
	epoch         string

	mu    sync.Mutex
	rooms map[string]*roomLog

	nodesMu sync.Mutex // guards nodes
	nodes   map[string]*node
}

type roomLog struct {
	entries   []rooms.Entry // the newest historyLength messages
	last      uint64
	followers map[*serial]follower
	presence  map[string][]rooms.PresenceEntry // by node
	watchers  map[*serial]watcher
	signals   map[*serial]signalWatcher
}

type signalWatcher struct {
	node string
	fn   func([]byte)
}

type follower struct {
	n       *node
	deliver func(rooms.Entry)
}

type watcher struct {
	node string // the watching node: its own lists are not passed to it
	fn   func(node string, members []rooms.PresenceEntry)
}

// NewCluster returns an empty cluster whose rooms keep their newest
// historyLength messages (rooms.DefaultHistoryMessages if 0 or less).
func NewCluster(historyLength int) *Cluster {
	if historyLength <= 0 {
		historyLength = rooms.DefaultHistoryMessages
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Cluster{historyLength: historyLength, epoch: hex.EncodeToString(b[:]),
		rooms: make(map[string]*roomLog), nodes: make(map[string]*node)}
}

func (c *Cluster) room(name string) *roomLog {
	r := c.rooms[name]
	if r == nil {
		r = &roomLog{followers: make(map[*serial]follower), presence: make(map[string][]rooms.PresenceEntry),
			watchers: make(map[*serial]watcher), signals: make(map[*serial]signalWatcher)}
		c.rooms[name] = r
	}
	return r
}

// Node returns the cluster's node named name, made on the first call for
// that name: the backplane of one server (troupe.Config.Backplane). The
// same name gives the same node, closed or not.
func (c *Cluster) Node(name string) rooms.Backplane { return c.node(name) }

func (c *Cluster) node(name string) *node {
	c.nodesMu.Lock()
	defer c.nodesMu.Unlock()
	n := c.nodes[name]
	if n == nil {
		n = &node{c: c, name: name}
		c.nodes[name] = n
	}
	return n
}

// Close takes the node named name out of the cluster, as if its process
// died: its members vanish from the other nodes' presence, its feeds stop,
// and its backplane methods return ErrClosed from then on.
func (c *Cluster) Close(name string) error { return c.node(name).close() }

// LoseDeliveries makes the feeds of the node named name miss the next
// count messages published to the cluster, as a network that dropped them
// would: the rooms of that node must notice the gap and fetch what they
// missed from the log.
func (c *Cluster) LoseDeliveries(name string, count int) { c.node(name).skip.Add(int64(count)) }

// DelayDeliveries makes the feeds of the node named name receive every
// message published from now on d after it was taken, as a slow link
// would: the node's copy of the room trails the log (and the
// acknowledgements) by d.
func (c *Cluster) DelayDeliveries(name string, d time.Duration) { c.node(name).delay.Store(int64(d)) }

// node is one server node's view of a Cluster. It implements
// rooms.Backplane.
type node struct {
	c    *Cluster
	name string

	mu     sync.Mutex // guards closed and subs; taken before Cluster.mu
	closed bool
	subs   map[*serial]struct{}
	skip   atomic.Int64 // deliveries to lose, see LoseDeliveries
	delay  atomic.Int64 // a time.Duration, see DelayDeliveries
}

var (
	_ rooms.Backplane      = (*node)(nil)
	_ rooms.PresenceSyncer = (*node)(nil)
)

// Node returns the node's name.
func (n *node) Node() string { return n.name }

// Follow implements rooms.Backplane.
func (n *node) Follow(_ context.Context, room string, deliver func(rooms.Entry)) (*rooms.Feed, error) {
	var backlog []rooms.Entry
	stop, err := n.subscribe(room, func(r *roomLog, q *serial) {
		backlog = append([]rooms.Entry(nil), r.entries...)
		r.followers[q] = follower{n: n, deliver: deliver}
	}, func(r *roomLog, q *serial) { delete(r.followers, q) })
	if err != nil {
		return nil, err
	}
	return &rooms.Feed{Epoch: n.c.epoch, Backlog: backlog, Stop: stop}, nil
}

// subscribe adds a feed or watch of room under the cluster's lock (add),
// with the serial queue that will run its calls, and returns the function
// that stops it and takes it out again (remove).
func (n *node) subscribe(room string, add, remove func(r *roomLog, q *serial)) (func(), error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	q := &serial{}
	n.track(q)
	c := n.c
	c.mu.Lock()
	r := c.room(room)
	add(r, q)
	c.mu.Unlock()
	return func() {
		q.stop()
		c.mu.Lock()
		remove(r, q)
		c.mu.Unlock()
		n.untrack(q)
	}, nil
}

// Publish implements rooms.Backplane.
func (n *node) Publish(_ context.Context, room string, count int, build func(first uint64) [][]byte) (uint64, error) {
	if n.isClosed() {
		return 0, ErrClosed
	}
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.room(room)
	first := r.last + 1
	payloads := build(first)
	if len(payloads) != count {
		return 0, fmt.Errorf("memory: build returned %d messages, want %d", len(payloads), count)
	}
	for i, p := range payloads {
		e := rooms.Entry{Seq: first + uint64(i), Payload: p}
		r.last = e.Seq
		r.entries = append(r.entries, e)
		for q, f := range r.followers {
			if f.n.skip.Load() > 0 && f.n.skip.Add(-1) >= 0 {
				continue
			}
			deliver := f.deliver
			if d := time.Duration(f.n.delay.Load()); d > 0 {
				due := time.Now().Add(d)
				q.push(func() { time.Sleep(time.Until(due)); deliver(e) })
				continue
			}
			q.push(func() { deliver(e) })
		}
	}
	if len(r.entries) > c.historyLength {
		r.entries = append(r.entries[:0:0], r.entries[len(r.entries)-c.historyLength:]...)
	}
	return first, nil
}

// Announce implements rooms.Backplane.
func (n *node) Announce(room string, members []rooms.PresenceEntry) error {
	if n.isClosed() {
		return ErrClosed
	}
	n.c.announce(n.name, room, members)
	return nil
}

func (c *Cluster) announce(node, room string, members []rooms.PresenceEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.room(room)
	if len(members) == 0 {
		if _, ok := r.presence[node]; !ok {
			return
		}
		delete(r.presence, node)
		members = nil
	} else {
		r.presence[node] = append([]rooms.PresenceEntry(nil), members...)
	}
	for q, w := range r.watchers {
		if w.node != node {
			fn := w.fn
			q.push(func() { fn(node, members) })
		}
	}
}

// SyncPresence implements rooms.PresenceSyncer: the cluster's lists, at
// once and complete.
func (n *node) SyncPresence(_ context.Context, room string) (map[string][]rooms.PresenceEntry, bool, error) {
	if n.isClosed() {
		return nil, false, ErrClosed
	}
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	lists := make(map[string][]rooms.PresenceEntry)
	if r := c.rooms[room]; r != nil {
		for node, list := range r.presence {
			if node != n.name {
				lists[node] = append([]rooms.PresenceEntry(nil), list...)
			}
		}
	}
	return lists, true, nil
}

// WatchPresence implements rooms.Backplane.
func (n *node) WatchPresence(room string, fn func(node string, members []rooms.PresenceEntry)) (func(), error) {
	return n.subscribe(room, func(r *roomLog, q *serial) {
		r.watchers[q] = watcher{node: n.name, fn: fn}
		for node, list := range r.presence {
			if node != n.name {
				q.push(func() { fn(node, list) })
			}
		}
	}, func(r *roomLog, q *serial) { delete(r.watchers, q) })
}

// Signal implements rooms.Backplane.
func (n *node) Signal(room string, data []byte) error {
	if n.isClosed() {
		return ErrClosed
	}
	data = append([]byte(nil), data...)
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, w := range c.room(room).signals {
		if w.node != n.name {
			fn := w.fn
			q.push(func() { fn(data) })
		}
	}
	return nil
}

// WatchSignals implements rooms.Backplane.
func (n *node) WatchSignals(room string, fn func([]byte)) (func(), error) {
	return n.subscribe(room, func(r *roomLog, q *serial) {
		r.signals[q] = signalWatcher{node: n.name, fn: fn}
	}, func(r *roomLog, q *serial) { delete(r.signals, q) })
}

// close takes the node out of the cluster (Cluster.Close).
func (n *node) close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	subs := n.subs
	n.subs = nil
	n.mu.Unlock()
	for q := range subs {
		q.stop()
	}
	c := n.c
	c.mu.Lock()
	var announced []string
	for name, r := range c.rooms {
		if _, ok := r.presence[n.name]; ok {
			announced = append(announced, name)
		}
	}
	c.mu.Unlock()
	for _, name := range announced {
		c.announce(n.name, name, nil)
	}
	return nil
}

func (n *node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

func (n *node) track(q *serial) {
	if n.subs == nil {
		n.subs = make(map[*serial]struct{})
	}
	n.subs[q] = struct{}{}
}

func (n *node) untrack(q *serial) {
	n.mu.Lock()
	delete(n.subs, q)
	n.mu.Unlock()
}

// serial runs the calls pushed to it one at a time, in order, on a
// goroutine that exists only while calls are waiting: a feed's deliver and
// a watch's fn are never called concurrently and never under a lock, so
// they may call back into the node.
type serial struct {
	mu      sync.Mutex
	q       []func()
	running bool
	stopped bool
	idle    sync.WaitGroup
}

func (s *serial) push(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.q = append(s.q, fn)
	if !s.running {
		s.running = true
		s.idle.Add(1)
		go s.run()
	}
}

func (s *serial) run() {
	defer s.idle.Done()
	for {
		s.mu.Lock()
		if len(s.q) == 0 || s.stopped {
			s.running = false
			s.q = nil
			s.mu.Unlock()
			return
		}
		fn := s.q[0]
		s.q[0] = nil
		s.q = s.q[1:]
		s.mu.Unlock()
		fn()
	}
}

// stop drops what is waiting; a call in progress finishes on its own.
func (s *serial) stop() {
	s.mu.Lock()
	s.stopped = true
	s.q = nil
	s.mu.Unlock()
}
