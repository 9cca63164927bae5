package main

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/troupetest"
)

// message is a room.message of the auction's stream.
type message struct {
	Seq  uint64   `json:"seq"`
	Type string   `json:"type"`
	Body accepted `json:"body"`
}

func startAuction(t *testing.T, length time.Duration) (*troupetest.Server, *troupe.Server) {
	t.Helper()
	_, srv, err := newAuction(troupe.Config{}, length)
	if err != nil {
		t.Fatal(err)
	}
	return troupetest.NewServer(t, srv), srv
}

// bidder connects as name and joins the auction room, taking room.joined
// and the auction.state that follows it.
func bidder(t *testing.T, ts *troupetest.Server, name, room string) (*troupetest.Client, State) {
	t.Helper()
	c := troupetest.Dial(t, ts.URL+"/ws?name="+name, nil)
	if err := c.Request("room.join", map[string]string{"room": room}, nil); err != nil {
		t.Fatalf("%s joins: %v", name, err)
	}
	var st State
	c.Expect("auction.state", &st)
	return c, st
}

func bid(t *testing.T, c *troupetest.Client, room string, amount int) Result {
	t.Helper()
	var r Result
	if err := c.Request("bid", map[string]any{"room": room, "amount": amount}, &r); err != nil {
		t.Fatalf("bid %d: %v", amount, err)
	}
	return r
}

func expectBid(t *testing.T, c *troupetest.Client, seq uint64, bidder string, amount int) {
	t.Helper()
	var m message
	c.Expect("room.message", &m)
	if m.Seq != seq || m.Type != "auction.bid" || m.Body != (accepted{bidder, amount}) {
		t.Fatalf("got %+v, want bid %d of %s %d", m, seq, bidder, amount)
	}
}

func TestBidsAreAnsweredAndReachEveryoneInOneOrder(t *testing.T) {
	ts, _ := startAuction(t, time.Minute)
	ann, st := bidder(t, ts, "ann", "lamp")
	if st.High != 0 || st.Over || st.Room != "lamp" {
		t.Fatalf("a new auction: %+v", st)
	}
	bob, _ := bidder(t, ts, "bob", "lamp")
	ann.Expect("presence.diff", nil)

	if r := bid(t, ann, "lamp", 10); !r.Accepted || r.High != 10 {
		t.Fatalf("first bid: %+v, want accepted", r)
	}
	if r := bid(t, bob, "lamp", 10); r.Accepted || r.High != 10 || r.Reason == "" {
		t.Fatalf("an equal bid: %+v, want rejected with the high bid and a reason", r)
	}
	if r := bid(t, bob, "lamp", 15); !r.Accepted {
		t.Fatalf("a higher bid: %+v, want accepted", r)
	}
	for _, c := range []*troupetest.Client{ann, bob} {
		expectBid(t, c, 1, "ann", 10)
		expectBid(t, c, 2, "bob", 15)
	}

	// A late joiner is told the state, and the stream has the bids.
	cat, st := bidder(t, ts, "cat", "lamp")
	if st.High != 15 || st.Leader != "bob" {
		t.Fatalf("the late joiner's state: %+v, want bob leading at 15", st)
	}
	var hist struct{ Messages []message }
	if err := cat.Request("room.history", map[string]string{"room": "lamp"}, &hist); err != nil || len(hist.Messages) != 2 {
		t.Fatalf("history: %+v, %v", hist, err)
	}
	// The stream is the bids alone: members cannot publish into it.
	var re *troupe.ReplyError
	if err := cat.Request("room.publish", map[string]any{"room": "lamp", "body": "free lamp"}, nil); !errors.As(err, &re) || re.Code != "read_only" {
		t.Fatalf("room.publish: %v, want read_only", err)
	}
	// Not a member, no bid.
	dan := troupetest.Dial(t, ts.URL+"/ws?name=dan", nil)
	if err := dan.Request("bid", map[string]any{"room": "lamp", "amount": 99}, nil); !errors.As(err, &re) || re.Code != "not_member" {
		t.Fatalf("an outsider's bid: %v, want not_member", err)
	}
}

func TestTheAuctionEndsByItsTimer(t *testing.T) {
	ts, _ := startAuction(t, 300*time.Millisecond)
	ann, _ := bidder(t, ts, "ann", "vase")
	if r := bid(t, ann, "vase", 3); !r.Accepted {
		t.Fatalf("bid: %+v", r)
	}
	expectBid(t, ann, 1, "ann", 3)
	var end struct {
		Seq  uint64
		Type string
		Body State
	}
	ann.Expect("room.message", &end)
	if end.Seq != 2 || end.Type != "auction.ended" || !end.Body.Over || end.Body.Leader != "ann" || end.Body.High != 3 {
		t.Fatalf("the end: %+v, want seq 2 auction.ended won by ann at 3", end)
	}
	if r := bid(t, ann, "vase", 4); r.Accepted || !strings.Contains(r.Reason, "over") {
		t.Fatalf("a bid after the end: %+v, want rejected", r)
	}
}

// A room that empties keeps its auction for the members who come back.
func TestTheAuctionSurvivesAnEmptyRoom(t *testing.T) {
	ts, srv := startAuction(t, time.Minute)
	ann, first := bidder(t, ts, "ann", "clock")
	bid(t, ann, "clock", 7)
	ann.Close()
	// The room stopped with its last member: it is dormant.
	for deadline := time.Now().Add(5 * time.Second); len(srv.Rooms()) > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("room still live: %v", srv.Rooms())
		}
	}
	_, st := bidder(t, ts, "bob", "clock")
	if st.High != 7 || st.Leader != "ann" || !st.Ends.Equal(first.Ends) {
		t.Fatalf("after the room was empty: %+v, want ann's 7 and the same end (%v)", st, first.Ends)
	}
}

// The page and the client are served next to the WebSocket.
func TestServesThePage(t *testing.T) {
	handler, srv, err := newAuction(troupe.Config{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, path := range []string{"/", "/app.js", "/troupe.js"} {
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != 200 || w.Body.Len() == 0 {
			t.Errorf("GET %s: %d, %d bytes", path, w.Code, w.Body.Len())
		}
	}
}
