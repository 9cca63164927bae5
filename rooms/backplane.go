package rooms

import (
	"context"
	"encoding/json"
	"errors"
)

// A Backplane lets one room span several server nodes under the room
// protocol (Config.Protocol). Without one, the default, a room lives in one
// process: its actor stamps the sequence numbers and keeps the history in
// memory, and nothing leaves the process.
//
// With a Backplane, the backplane holds the room's log. A node follows a
// room only while it has members in it (interest-based), so traffic between
// nodes grows with the number of nodes, not with the number of members: the
// room actor of each node receives every message once and fans it out to
// its own members. Presence works the same way: each node announces its own
// members of a room, and hears the lists of the others.
//
// The module github.com/troupehq/troupe/backplane/nats implements it on NATS
// JetStream; github.com/troupehq/troupe/backplane/memory joins Managers of
// one process, for tests.
//
// A room actor calls these methods from its own goroutine, one room at a
// time; implementations must be safe for concurrent use by many rooms.
type Backplane interface {
	// Node names this node, unique among the nodes that share the
	// backplane.
	Node() string

	// Follow starts following room. It returns the room's messages that
	// the backplane still holds, oldest first, and from then on passes every
	// newer message to deliver, in sequence order, from one goroutine at a
	// time, until Feed.Stop. deliver must not block. A message may be passed
	// again (after a reconnect): the room drops what it already has. If the
	// room sees a gap, it stops the feed and follows again.
	Follow(ctx context.Context, room string, deliver func(Entry)) (*Feed, error)

	// Publish appends count messages to room's log, in order, and returns
	// the sequence number of the first; the others follow it without a gap,
	// whichever node published the messages before them. build encodes the
	// count messages for a given first sequence number; Publish calls it
	// again, with a later number, when another node published first. A
	// room hands over in one call what its members sent while the previous
	// call was on its way, so that a busy room pays one round trip per
	// batch, not per message. build may return nil to give up: Publish
	// then appends nothing and returns an error (a room does so when the
	// batch repeats a message already in the log, see Config.DedupeWindow).
	Publish(ctx context.Context, room string, count int, build func(first uint64) [][]byte) (uint64, error)

	// Announce replaces this node's member list for room (empty: it has
	// none). The backplane keeps the list alive until it is replaced; the
	// other nodes drop it when they stop hearing from this node.
	Announce(room string, members []PresenceEntry) error

	// WatchPresence passes to fn every other node's member list for room
	// whenever it changes, and nil when a node's list expired, from one
	// goroutine at a time, until stop. Lists announced before the watch
	// began are passed too, soon after it begins. fn must not block. stop
	// may be called more than once, and from fn; it does not wait for a
	// call of fn in progress.
	WatchPresence(room string, fn func(node string, members []PresenceEntry)) (stop func(), err error)

	// Signal passes data to the other nodes that watch room's signals:
	// Manager.Broadcast and Room.Broadcast reach the members of every node
	// through it. Unlike Publish it is neither kept nor numbered: a node
	// gets a signal at most once, one node's signals in the order sent,
	// in no fixed order with the room's messages.
	Signal(room string, data []byte) error

	// WatchSignals passes to fn every signal another node sends to room,
	// from one goroutine at a time, until stop (which behaves as
	// WatchPresence's). fn must not block.
	WatchSignals(room string, fn func(data []byte)) (stop func(), err error)
}

// A PresenceSyncer is a Backplane that can fetch, on demand, the member
// lists the other nodes have announced for a room. A room joins through it
// so that room.joined lists every member whose own room.joined was sent
// before the join arrived, on whichever node; a Backplane without it (or a
// sync that times out) gives room.joined "presence":"partial": the list is
// what this node had heard, and the rest follows as presence.diff.
type PresenceSyncer interface {
	// SyncPresence returns the other nodes' current lists of room, by
	// node (nodes without members may be left out). complete says whether
	// every live node answered; a list missing from an incomplete answer
	// says nothing about that node.
	SyncPresence(ctx context.Context, room string) (lists map[string][]PresenceEntry, complete bool, err error)
}

// Feed is a room being followed (Backplane.Follow).
type Feed struct {
	// Epoch names the log's numbering. A log that was deleted and started
	// again numbers from 1 anew under another epoch, so that clients cannot
	// resume from a sequence number of the old one.
	Epoch string
	// Backlog is what the backplane held when the feed began, oldest
	// first: the room's recent history.
	Backlog []Entry
	// Stop ends the feed. It does not wait for a deliver call in progress.
	Stop func()
}

// PresenceEntry is one member as a node announces it.
type PresenceEntry struct {
	// Key tells members apart: the member's session ID.
	Key string `json:"key"`
	// Entry is the member as the protocol shows it, {"id":…,"meta":…}.
	Entry json.RawMessage `json:"entry"`
}

// ErrUnavailable is returned (and sent to clients as "unavailable") when
// the backplane cannot take a message now, for example while its cluster
// elects a new leader or while a room's publish queue is full.
var ErrUnavailable = errors.New("rooms: backplane unavailable")
