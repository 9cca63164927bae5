package main

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/troupehq/troupe"
)

// A live auction per room, written as room logic: bids are requests the
// room answers, accepted bids go into the room's numbered stream (so every
// member sees them in one order, and a member that reconnects resumes
// them), a late joiner is sent the auction's state, and a room timer ends
// the auction.

// The page is embedded so that the binary is the whole deployment.
//
//go:embed static
var static embed.FS

// Bid is what a bidder sends: {"type":"bid","room":…,"id":…,"payload":{"amount":N}}.
type Bid struct {
	Amount int `json:"amount"`
}

// Result answers a bid: accepted, or why not.
type Result struct {
	Accepted bool   `json:"accepted"`
	High     int    `json:"high"`
	Reason   string `json:"reason,omitempty"`
}

// State is the auction, as auction.state tells a joiner and auction.ended
// tells everyone.
type State struct {
	Room   string    `json:"room"`
	High   int       `json:"high"`
	Leader string    `json:"leader"`
	Ends   time.Time `json:"ends"`
	Over   bool      `json:"over"`
}

// accepted is the body of an auction.bid message of the room's stream.
type accepted struct {
	Bidder string `json:"bidder"`
	Amount int    `json:"amount"`
}

type auction struct {
	troupe.NopRoomHandler
	length time.Duration
	st     State
}

type timeUp struct{}

func (a *auction) OnStart(r *troupe.Room) {
	if a.st.Ends.IsZero() {
		a.st = State{Room: r.Name(), Ends: time.Now().Add(a.length)}
	}
	if !a.st.Over {
		r.After(time.Until(a.st.Ends), timeUp{}) // again after a restart or a wake
	}
}

func (a *auction) OnJoin(_ *troupe.Room, s *troupe.Session) { _ = s.Send("auction.state", a.st) }

func (a *auction) OnMessage(r *troupe.Room, _ *troupe.Session, msg any) {
	if _, ok := msg.(timeUp); ok && !a.st.Over {
		a.st.Over = true
		_ = r.Publish("auction.ended", a.st)
	}
}

func (a *auction) bid(r *troupe.Room, from *troupe.Session, b Bid) (Result, error) {
	switch {
	case a.st.Over:
		return Result{High: a.st.High, Reason: "the auction is over"}, nil
	case b.Amount <= a.st.High:
		return Result{High: a.st.High, Reason: "bid more than the highest bid"}, nil
	}
	a.st.High, a.st.Leader = b.Amount, r.MemberID(from)
	return Result{Accepted: true, High: b.Amount}, r.Publish("auction.bid", accepted{a.st.Leader, b.Amount})
}

// OnPublish keeps the stream to bids and results: members bid with "bid".
func (a *auction) OnPublish(*troupe.Room, *troupe.Session, json.RawMessage) (json.RawMessage, error) {
	return nil, troupe.NewError("read_only", `bid with a "bid" request`)
}

// Snapshot and Restore keep the auction across a restart of the room and
// while it is empty (HistoryRetention), as its stream is kept.
func (a *auction) Snapshot() any     { return a.st }
func (a *auction) Restore(state any) { a.st = state.(State) }

// newAuction returns the page at "/", the client at "/troupe.js" and the
// WebSocket at "/ws"; each room is an auction that ends length after it
// starts. ?name= on the WebSocket URL is the bidder's name.
func newAuction(base troupe.Config, length time.Duration) (http.Handler, *troupe.Server, error) {
	cfg := base
	cfg.RoomProtocol = true
	cfg.NewRoomHandler = func(string) troupe.RoomHandler { return &auction{length: length} }
	cfg.Authorize = func(r *http.Request) (string, error) {
		name := strings.TrimSpace(r.URL.Query().Get("name"))
		if name == "" || len(name) > 32 {
			return "", troupe.NewError("bad_name", "a name of 1 to 32 bytes, please")
		}
		return name, nil
	}
	srv, err := troupe.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	troupe.HandleRoom(srv, "bid", (*auction).bid)
	page, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(page))
	mux.Handle("GET /troupe.js", troupe.ClientJS())
	mux.Handle("GET /ws", srv)
	return mux, srv, nil
}
