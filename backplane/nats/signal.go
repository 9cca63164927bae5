package nats

import (
	"sync"

	natsgo "github.com/nats-io/nats.go"
)

// Signals are a room's broadcasts that are not room messages (see
// rooms.Backplane.Signal): core NATS on troupe.signal.<token>, stored
// nowhere, each carrying its node's name so that a node skips its own.
const (
	signalPrefix = "troupe.signal."
	nodeHeader   = "Troupe-Node"
)

// Signal sends data to the other nodes that watch room's signals. It does
// not wait for them: a node that is not connected at that moment misses it.
func (b *Backplane) Signal(room string, data []byte) error {
	if b.closed.Load() {
		return b.errClosed()
	}
	m := natsgo.NewMsg(signalPrefix + roomToken(room))
	m.Header.Set(nodeHeader, b.cfg.Node)
	m.Data = data
	if err := b.nc.PublishMsg(m); err != nil {
		return unavailable(err)
	}
	return nil
}

// WatchSignals passes to fn every signal another node sends to room, on
// the subscription's own goroutine, in the order received. The stop
// function may be called more than once, and from fn; it does not wait for
// a call of fn in progress.
func (b *Backplane) WatchSignals(room string, fn func(data []byte)) (func(), error) {
	if b.closed.Load() {
		return nil, b.errClosed()
	}
	node := b.cfg.Node
	sub, err := b.nc.Subscribe(signalPrefix+roomToken(room), func(m *natsgo.Msg) {
		if m.Header.Get(nodeHeader) != node {
			fn(m.Data)
		}
	})
	if err != nil {
		return nil, unavailable(err)
	}
	// The connection's drain on Close ends the subscription too.
	return sync.OnceFunc(func() { _ = sub.Unsubscribe() }), nil
}
