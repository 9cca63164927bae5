// Package chatserver is the chat example's server: a page at "/" that talks
// to Troupe's built-in room protocol at "/ws" through the JavaScript client
// (served at "/troupe.js"), and Prometheus metrics at "/metrics". It is a
// package of its own, rather than part of the command, so that the
// end-to-end browser tests can serve exactly what the command serves.
//
// On top of the room protocol (room.join, room.publish, room.history,
// room.leave, presence.diff; see the repository's README) the chat adds:
//
//	?name=ann on the WebSocket URL  the display name (trimmed, 1 to 32
//	                                characters, "anon" when blank)
//	chat.welcome {id, name}         sent to each connection first: the member
//	                                id its messages and presence carry
//	room.publish body {"text"}      1 to 2000 characters, nothing else;
//	                                otherwise an error with code "invalid"
//	chat.typing {room}              the room's other members get
//	                                chat.typing {room, from, name}; a client
//	                                that is not a member gets "not_member"
package chatserver

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/troupehq/troupe"
)

// The page is embedded so that the binary is the whole deployment.
//
//go:embed static
var static embed.FS

// Limits of the chat. The server checks them: the page enforces them too,
// but a client is free to send anything.
const (
	// MaxNameLen is the longest display name, in characters.
	MaxNameLen = 32
	// MaxTextLen is the longest message text, in characters.
	MaxTextLen = 2000
	// AnonName is the display name of a client that gave none.
	AnonName = "anon"
)

// Error codes of the chat, on top of Troupe's own.
const (
	// CodeInvalid: a message body that is not {"text": 1 to 2000 characters}.
	CodeInvalid = "invalid"
	// CodeNotMember: chat.typing for a room the client is not in (the room
	// protocol answers the same code for room.publish and room.history).
	CodeNotMember = "not_member"
)

// Client to server.
type typingReq struct {
	Room string `json:"room"`
}

// Server to client.
type (
	welcomeMsg struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	typingMsg struct {
		Room string `json:"room"`
		From string `json:"from"`
		Name string `json:"name"`
	}
)

// Option adjusts the chat's Troupe configuration.
type Option func(*troupe.Config)

// WithBackplane makes the chat one node of several sharing bp: its rooms,
// and the typing indicators broadcast to them, span every node (see
// troupe.Config.Backplane).
func WithBackplane(bp troupe.Backplane) Option {
	return func(c *troupe.Config) { c.Backplane = bp }
}

// New returns the chat's HTTP handler and the Troupe server behind it,
// built on base (its settings and limits, for example from
// troupe.ConfigFromEnv) with the chat's own callbacks. The
// caller shuts the Troupe server down: http.Server.Shutdown alone forgets
// connections once they are upgraded to WebSockets.
func New(base troupe.Config, opts ...Option) (http.Handler, *troupe.Server, error) {
	page, err := fs.Sub(static, "static")
	if err != nil {
		return nil, nil, err
	}
	cfg := base
	cfg.RoomProtocol = true
	cfg.Authorize = authorize
	cfg.OnOpen = func(s *troupe.Session) {
		_ = s.Send("chat.welcome", welcomeMsg{ID: s.Identity(), Name: DisplayName(s.Identity())})
	}
	cfg.CheckPublish = func(_ *troupe.Session, _ string, body json.RawMessage) error {
		return checkBody(body)
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := troupe.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	troupe.Handle(srv, "chat.typing", func(c *troupe.Context, req typingReq) error {
		s := c.Session()
		// The session's own joins and leaves are handled one at a time on
		// its read loop, so the answer cannot change under this handler.
		if !slices.Contains(c.Server().RoomsOf(s), req.Room) {
			return troupe.NewError(CodeNotMember, "not a member of "+req.Room)
		}
		return c.Server().BroadcastExcept(req.Room, s, "chat.typing",
			typingMsg{Room: req.Room, From: s.Identity(), Name: DisplayName(s.Identity())})
	})

	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Metrics(), collectors.NewGoCollector())

	mux := http.NewServeMux()
	mux.Handle("GET /", pageHeaders(http.FileServerFS(page)))
	mux.Handle("GET /troupe.js", pageHeaders(troupe.ClientJS()))
	// GET: the WebSocket upgrade and the fallback's event stream; POST and
	// DELETE: the rest of the fallback (a Server answers all three).
	for _, method := range []string{"GET", "POST", "DELETE"} {
		mux.Handle(method+" /ws", srv)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux, srv, nil
}

// pageHeaders keeps the page to its own origin: it loads nothing from
// elsewhere and connects only back to this server, so a message that got
// past the page's escaping still could not fetch or send anything.
func pageHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy",
			"default-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// authorize is a demonstration of Config.Authorize: it trusts whatever name
// the client asks for (a real application would look at a session cookie or
// a token here) and returns the member's identity.
//
// The identity is "<name>#<random suffix>" rather than the bare name: the
// room protocol names each member by its identity, in member lists,
// presence diffs and the "from" of its messages, so two people (or two tabs)
// called "ann" must not share one, or a leave of either would look like a
// leave of both. Carrying the name inside the identity, instead of leaving
// the identity to the session ID and the name to the join's meta, has two
// advantages: the name of a message's author is known from the message
// alone, also for history whose author left long ago, and it is the name the
// server checked, which no client can dress up differently in its meta.
// DisplayName takes the name back out.
func authorize(r *http.Request) (string, error) {
	name := strings.TrimSpace(r.URL.Query().Get("name"))
	if name == "" {
		name = AnonName
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLen {
		return "", fmt.Errorf("name is %d characters, at most %d are allowed", n, MaxNameLen)
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", errors.New("name contains control characters")
	}
	// rand.Text's 26 base32 characters are more than a chat needs: 6 give
	// about a billion suffixes, and a clash would need two people with the
	// same name too.
	return name + "#" + strings.ToLower(rand.Text()[:6]), nil
}

// DisplayName returns the name part of a member id made by the chat
// ("ann#k3x7qa" -> "ann"); ids of another form are returned unchanged.
func DisplayName(id string) string {
	if i := strings.LastIndexByte(id, '#'); i > 0 {
		return id[:i]
	}
	return id
}

// checkBody accepts exactly {"text": <1 to MaxTextLen characters, not all
// blank>}. Unknown fields are refused too: every page shows the text only,
// so anything else would be kept in the history for nobody.
func checkBody(body json.RawMessage) error {
	var m struct {
		Text *string `json:"text"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil || m.Text == nil {
		return troupe.NewError(CodeInvalid, `body must be {"text": "..."}`)
	}
	if strings.TrimSpace(*m.Text) == "" {
		return troupe.NewError(CodeInvalid, "text is empty")
	}
	if utf8.RuneCountInString(*m.Text) > MaxTextLen {
		return troupe.NewError(CodeInvalid, fmt.Sprintf("text is longer than %d characters", MaxTextLen))
	}
	return nil
}
