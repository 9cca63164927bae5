package nats

import (
	"context"
	"encoding/json"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/troupehq/troupe/rooms"
)

// Presence sync (rooms.PresenceSyncer). Every node says it is alive on
// troupe.nodes every PresenceInterval (and at once when it hears a node it
// did not know), so each node knows the live nodes. A join asks them all,
// by request on troupe.presence-sync.<token> with a reply inbox, for their
// current list of the room; every live node answers, with an empty list if
// it has no members there. The answer is complete when every node heard
// within PresenceTTL answered before ctx ended.

const nodesSubject = "troupe.nodes"

var _ rooms.PresenceSyncer = (*Backplane)(nil)

// heartbeat says this node is alive.
func (b *Backplane) heartbeat() {
	_ = b.nc.Publish(nodesSubject, []byte(b.cfg.Node))
}

// heardNode records another node's heartbeat, answering with this node's
// own when the other is new, so that a node that starts learns the others
// within a round trip.
func (b *Backplane) heardNode(m *natsgo.Msg) {
	node := string(m.Data)
	if node == "" || node == b.cfg.Node {
		return
	}
	b.peersMu.Lock()
	_, known := b.peers[node]
	b.peers[node] = time.Now()
	b.peersMu.Unlock()
	if !known && !b.closed.Load() {
		b.heartbeat()
	}
}

// liveNodes returns the other nodes heard within PresenceTTL.
func (b *Backplane) liveNodes() map[string]bool {
	now := time.Now()
	b.peersMu.Lock()
	defer b.peersMu.Unlock()
	live := make(map[string]bool, len(b.peers))
	for node, at := range b.peers {
		if now.Sub(at) < b.cfg.PresenceTTL {
			live[node] = true
		} else {
			delete(b.peers, node)
		}
	}
	return live
}

// SyncPresence implements rooms.PresenceSyncer: it asks every live node
// for its list of room and waits for their answers until ctx ends.
func (b *Backplane) SyncPresence(ctx context.Context, room string) (map[string][]rooms.PresenceEntry, bool, error) {
	if b.closed.Load() {
		return nil, false, b.errClosed()
	}
	live := b.liveNodes()
	lists := make(map[string][]rooms.PresenceEntry)
	if len(live) == 0 {
		return lists, true, nil
	}
	inbox := b.nc.NewRespInbox()
	ch := make(chan *natsgo.Msg, len(live)+8)
	sub, err := b.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, false, unavailable(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(syncRequest{Node: b.cfg.Node})
	if err := b.nc.PublishMsg(&natsgo.Msg{Subject: syncPrefix + roomToken(room), Reply: inbox, Data: req}); err != nil {
		return nil, false, unavailable(err)
	}
	for len(live) > 0 {
		select {
		case m := <-ch:
			var a announcement
			if json.Unmarshal(m.Data, &a) != nil || a.Node == "" {
				continue
			}
			delete(live, a.Node)
			if len(a.Members) > 0 {
				lists[a.Node] = a.Members
			}
		case <-ctx.Done():
			return lists, false, nil
		}
	}
	return lists, true, nil
}
