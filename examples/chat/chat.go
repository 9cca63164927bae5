package main

import (
	"embed"
	"errors"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/troupehq/troupe"
)

// The page is embedded so that the binary is the whole deployment.
//
//go:embed static
var staticFiles embed.FS

// Limits of the protocol. They are checked on the server: the page enforces
// them too, but a client is free to send anything.
const (
	maxNameLen = 32
	maxRoomLen = 64
	maxTextLen = 2000
	anonName   = "anon"
)

// Error codes of the chat protocol, on top of Troupe's own.
const (
	codeInvalid   = "invalid"
	codeNotMember = "not_member"
)

// Client to server payloads.
type (
	joinReq struct {
		Room string `json:"room"`
		Name string `json:"name"`
	}
	roomReq struct {
		Room string `json:"room"`
	}
	messageReq struct {
		Room string `json:"room"`
		Text string `json:"text"`
	}
)

// Server to client payloads.
type (
	member struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	joinedMsg struct {
		Room    string   `json:"room"`
		You     member   `json:"you"`
		Members []member `json:"members"`
	}
	leftMsg struct {
		Room string `json:"room"`
	}
	presenceMsg struct {
		Room   string  `json:"room"`
		Joined *member `json:"joined,omitempty"`
		Left   *member `json:"left,omitempty"`
	}
	messageMsg struct {
		Room string `json:"room"`
		From member `json:"from"`
		Text string `json:"text"`
		TS   int64  `json:"ts"` // Unix milliseconds, what JavaScript's Date takes
	}
	typingMsg struct {
		Room string `json:"room"`
		From member `json:"from"`
	}
)

// nameKey is the Session.Set key of the name a client chose in chat.join.
type nameKey struct{}

func nameOf(s *troupe.Session) string {
	if v, ok := s.Get(nameKey{}); ok {
		return v.(string)
	}
	return anonName
}

func memberOf(s *troupe.Session) member { return member{ID: s.ID(), Name: nameOf(s)} }

// presenceRoom is the logic of every chat room. It runs inside the room
// actor, so its presence notices are ordered with the room's joins, leaves
// and messages, and a member whose connection drops is announced as gone
// without anyone having to track it: the room sees the session terminate.
type presenceRoom struct{ troupe.NopRoomHandler }

// OnJoin tells the other members; the newcomer learns the member list from
// its chat.joined reply instead.
func (presenceRoom) OnJoin(r *troupe.Room, s *troupe.Session) {
	m := memberOf(s)
	_ = r.BroadcastExcept(s, "chat.presence", presenceMsg{Room: r.Name(), Joined: &m})
}

// OnLeave runs for a chat.leave and for a closed connection alike; the
// session is no longer a member, so Broadcast reaches only the others.
func (presenceRoom) OnLeave(r *troupe.Room, s *troupe.Session) {
	m := memberOf(s)
	_ = r.Broadcast("chat.presence", presenceMsg{Room: r.Name(), Left: &m})
}

// newServer returns the chat's HTTP handler (the page at "/", the WebSocket
// at "/ws") and the Troupe server behind it, which the caller shuts down.
func newServer(settings troupe.Settings) (http.Handler, *troupe.Server, error) {
	srv, err := troupe.New(troupe.Config{
		Settings:       settings,
		NewRoomHandler: func(string) troupe.RoomHandler { return presenceRoom{} },
	})
	if err != nil {
		return nil, nil, err
	}
	troupe.Handle(srv, "chat.join", handleJoin)
	troupe.Handle(srv, "chat.leave", handleLeave)
	troupe.Handle(srv, "chat.message", handleMessage)
	troupe.Handle(srv, "chat.typing", handleTyping)
	// Browsers cannot send WebSocket pings and the server closes
	// connections that stay silent for its idle timeout, so the page
	// sends this now and then.
	troupe.Handle(srv, "chat.ping", func(c *troupe.Context, _ struct{}) error {
		return c.Reply("chat.pong", nil)
	})

	page, err := fs.Sub(staticFiles, "static")
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(page))
	mux.Handle("GET /ws", srv)
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Metrics(), collectors.NewGoCollector())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux, srv, nil
}

// handleJoin answers chat.join. Joining a room again is answered like the
// first time but announced to no one; the name, though, is the session's and
// shows from then on in every room it is in.
func handleJoin(c *troupe.Context, req joinReq) error {
	room, err := roomName(req.Room)
	if err != nil {
		return err
	}
	name := strings.TrimSpace(req.Name)
	switch n := utf8.RuneCountInString(name); {
	case n == 0:
		name = anonName
	case n > maxNameLen:
		return troupe.NewError(codeInvalid, "name is longer than 32 characters")
	}
	// The name is set before the join so that the room's OnJoin, which
	// runs as soon as the join is in effect, announces it.
	c.Session().Set(nameKey{}, name)
	if err := c.Join(room); err != nil {
		return err
	}
	sessions, err := c.Server().Members(c.Context(), room)
	if err != nil {
		return err
	}
	members := make([]member, 0, len(sessions))
	for _, s := range sessions {
		members = append(members, memberOf(s))
	}
	return c.Reply("chat.joined", joinedMsg{Room: room, You: memberOf(c.Session()), Members: members})
}

func handleLeave(c *troupe.Context, req roomReq) error {
	room, err := roomName(req.Room)
	if err != nil {
		return err
	}
	if err := c.Leave(room); err != nil {
		if errors.Is(err, troupe.ErrNotMember) {
			return notMember(room)
		}
		return err
	}
	return c.Reply("chat.left", leftMsg{Room: room})
}

func handleMessage(c *troupe.Context, req messageReq) error {
	room, err := memberRoom(c, req.Room)
	if err != nil {
		return err
	}
	if strings.TrimSpace(req.Text) == "" {
		return troupe.NewError(codeInvalid, "text is empty")
	}
	if utf8.RuneCountInString(req.Text) > maxTextLen {
		return troupe.NewError(codeInvalid, "text is longer than 2000 characters")
	}
	return c.Server().Broadcast(room, "chat.message", messageMsg{
		Room: room,
		From: memberOf(c.Session()),
		Text: req.Text,
		TS:   time.Now().UnixMilli(),
	})
}

func handleTyping(c *troupe.Context, req roomReq) error {
	room, err := memberRoom(c, req.Room)
	if err != nil {
		return err
	}
	return c.Server().BroadcastExcept(room, c.Session(), "chat.typing",
		typingMsg{Room: room, From: memberOf(c.Session())})
}

// memberRoom checks that the sender is in the room it writes to. Its own
// joins and leaves are handled one at a time on its read loop, so the
// answer cannot change under this handler.
func memberRoom(c *troupe.Context, raw string) (string, error) {
	room, err := roomName(raw)
	if err != nil {
		return "", err
	}
	if !slices.Contains(c.Server().RoomsOf(c.Session()), room) {
		return "", notMember(room)
	}
	return room, nil
}

func roomName(raw string) (string, error) {
	room := strings.TrimSpace(raw)
	switch n := utf8.RuneCountInString(room); {
	case n == 0:
		return "", troupe.NewError(codeInvalid, "room is empty")
	case n > maxRoomLen:
		return "", troupe.NewError(codeInvalid, "room is longer than 64 characters")
	}
	return room, nil
}

func notMember(room string) error {
	return troupe.NewError(codeNotMember, "not a member of "+room)
}
