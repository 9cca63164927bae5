package client

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

const rateLimited = `{"type":"error","payload":{"code":"rate_limited","message":"too many messages; slow down"}}`

// A publish refused with an error the server cannot tie to it (no id) is
// sent again with the same mid, instead of waiting for ever.
func TestPublishRefusedWithoutIDIsSentAgain(t *testing.T) {
	fs := newFakeServer(t, false)
	c := dialFake(t, fs, &Options{RequestTimeout: 100 * time.Millisecond})
	fc := fs.accept(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Room("r").Publish(context.Background(), "hi")
		done <- err
	}()
	first := fc.expect("room.publish")
	fc.send(rateLimited)
	again := fc.expect("room.publish")
	mid := func(env envelope) string {
		var p struct{ Mid string }
		_ = json.Unmarshal(env.Payload, &p)
		return p.Mid
	}
	if mid(first) == "" || mid(again) != mid(first) {
		t.Fatalf("sent again with mid %q, first %q: want the same", mid(again), mid(first))
	}
	fc.send(`{"type":"reply","id":` + string(again.ID) + `,"payload":{"seq":1}}`)
	if err := recv(t, done, "Publish"); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

// A catch-up whose closing room.join is refused without an id still ends:
// OnRecover fires.
func TestCatchUpEndsWhenItsRefreshIsRefusedWithoutID(t *testing.T) {
	fs := newFakeServer(t, false)
	c := dialFake(t, fs, &Options{RequestTimeout: 100 * time.Millisecond})
	fc, recovers := catchUpToRefresh(t, fs, c)
	fc.send(rateLimited)
	if r := recv(t, recovers, "OnRecover"); !r.Recovered {
		t.Fatalf("recover %+v", r)
	}
}

// A catch-up whose closing room.join is cut off by the connection's end
// reports nothing itself: the rejoin reports, once.
func TestCatchUpCutOffByDisconnectReportsOnlyTheRejoin(t *testing.T) {
	fs := newFakeServer(t, false)
	c := dialFake(t, fs, &Options{MinDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond})
	fc, recovers := catchUpToRefresh(t, fs, c)
	_ = fc.ws.CloseNow()

	fc = fs.accept(t)
	rejoin := fc.expect("room.join")
	fc.send(`{"type":"room.joined","id":` + string(rejoin.ID) + `,"payload":{"room":"r","seq":0,"epoch":"e1","members":[],"recovered":false}}`)
	if r := recv(t, recovers, "OnRecover"); r.Recovered {
		t.Fatalf("first recover %+v: want the rejoin's (not recovered), not one from the cut-off catch-up", r)
	}
}

// catchUpToRefresh joins room "r" of c, has the fake server send a
// room.resync and answer the catch-up's history page with nothing, and
// returns once the catch-up has sent its closing room.join (not answered).
func catchUpToRefresh(t *testing.T, fs *fakeServer, c *Client) (*fakeConn, chan Recover) {
	t.Helper()
	room := c.Room("r")
	recovers := make(chan Recover, 4)
	room.OnRecover(func(r Recover) { recovers <- r })
	fc := fs.accept(t)
	joined := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err := room.Join(ctx, nil)
		joined <- err
	}()
	join := fc.expect("room.join")
	fc.send(`{"type":"room.joined","id":` + string(join.ID) + `,"payload":{"room":"r","seq":0,"epoch":"e1","members":[]}}`)
	if err := recv(t, joined, "Join"); err != nil {
		t.Fatalf("Join: %v", err)
	}
	fc.send(`{"type":"room.resync","payload":{"room":"r"}}`)
	page := fc.expect("room.history")
	fc.send(`{"type":"reply","id":` + string(page.ID) + `,"payload":{"messages":[]}}`)
	fc.expect("room.join")
	return fc, recovers
}
