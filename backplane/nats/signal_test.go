package nats

import (
	"testing"
	"time"
)

// TestSignalsReachOtherNodesOnly checks that a signal reaches the other
// node's watch of its room, in the order sent, not the sender's own watch,
// not another room's, and nothing after stop.
func TestSignalsReachOtherNodesOnly(t *testing.T) {
	a := openSolo(t, nil)
	b := openPeer(t, a.Server(), "b", nil)
	got := make(chan string, 16)
	own := make(chan string, 16)
	stopB, err := b.WatchSignals("lobby", func(d []byte) { got <- string(d) })
	if err != nil {
		t.Fatal(err)
	}
	stopA, err := a.WatchSignals("lobby", func(d []byte) { own <- string(d) })
	if err != nil {
		t.Fatal(err)
	}
	defer stopA()
	other, err := b.WatchSignals("other", func(d []byte) { got <- "other:" + string(d) })
	if err != nil {
		t.Fatal(err)
	}
	defer other()
	// Subscriptions are in effect once the server has them.
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"1", "2", "3"} {
		if err := a.Signal("lobby", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"1", "2", "3"} {
		select {
		case s := <-got:
			if s != want {
				t.Fatalf("b got signal %q, want %q", s, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("b did not get signal %q", want)
		}
	}
	select {
	case s := <-own:
		t.Fatalf("a got its own signal %q", s)
	default:
	}
	stopB()
	stopB() // twice is fine
	if err := a.Signal("lobby", []byte("late")); err != nil {
		t.Fatal(err)
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// b's watch of "lobby" is gone; a round trip through b's connection
	// shows nothing was on its way.
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		t.Fatalf("after stop b got %q", s)
	case s := <-own:
		t.Fatalf("a got its own signal %q", s)
	default:
	}
}
