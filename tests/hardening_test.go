package tests

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
)

// What hostile or broken clients try at the door and afterwards: cross-site
// upgrades, bad or slow credentials, joins they may not make, floods,
// connection and room exhaustion.

// withOrigin returns dial options for name that send the given Origin
// header, as a browser page on that origin would.
func (h *testServer) withOrigin(name, origin string) *websocket.DialOptions {
	opts := h.dialOptions(name)
	opts.HTTPHeader.Set("Origin", origin)
	return opts
}

// sameOrigin is the Origin a page served by the test server itself sends.
func (h *testServer) sameOrigin() string { return h.ts.URL }

// expectAccepted dials with opts, checks that a session opens and answers,
// and closes the client.
func (h *testServer) expectAccepted(t *testing.T, name string, opts *websocket.DialOptions) {
	t.Helper()
	ws, status, err := h.tryDial(opts)
	if err != nil {
		t.Errorf("%s: upgrade refused: HTTP %d (%v), want accepted", name, status, err)
		return
	}
	defer ws.CloseNow()
	s := h.rec.session(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatalf("%s: write: %v", name, err)
	}
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("%s: read: %v", name, err)
	}
	if e := decodeEnvelope(t, data); e.Type != "pong" {
		t.Errorf("%s: ping answered %s %s, want pong", name, e.Type, e.Payload)
	}
	if err := ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("%s: close: %v", name, err)
	}
	h.rec.waitClose(t, s)
}

// TestOriginCheckedByDefault checks the defence against cross-site
// WebSocket hijacking: with no origin settings, a page on another site
// cannot open a connection (403, no session), while pages of the server's
// own origin and clients that send no Origin (non-browser clients) can.
func TestOriginCheckedByDefault(t *testing.T) {
	h := startServer(t, troupe.Config{})

	h.expectRefused(t, "cross-origin", h.withOrigin("evil", "http://evil.example"), http.StatusForbidden)
	h.expectRefused(t, "cross-origin with the server's port", h.withOrigin("evil-port",
		"http://evil.example:"+h.ts.URL[strings.LastIndex(h.ts.URL, ":")+1:]), http.StatusForbidden)
	h.expectRefused(t, "null origin", h.withOrigin("null-origin", "null"), http.StatusForbidden)

	h.expectAccepted(t, "same-origin", h.withOrigin("same-origin", h.sameOrigin()))
	h.expectAccepted(t, "no-origin", h.dialOptions("no-origin"))

	opens, _ := h.rec.counts()
	if opens != 2 {
		t.Errorf("%d sessions opened, want 2 (the refused upgrades must not open any)", opens)
	}
}

// TestOriginPatternsAllowListedSites checks that OriginPatterns admits the
// listed sites and only them, and that the server's own origin stays
// allowed beside them.
func TestOriginPatternsAllowListedSites(t *testing.T) {
	h := startServer(t, troupe.Config{Settings: troupe.Settings{
		OriginPatterns: []string{"evil.example", "*.trusted.example"},
	}})

	h.expectAccepted(t, "listed", h.withOrigin("listed", "http://evil.example"))
	h.expectAccepted(t, "listed-https", h.withOrigin("listed-https", "https://evil.example"))
	h.expectAccepted(t, "subdomain", h.withOrigin("subdomain", "https://app.trusted.example"))
	h.expectAccepted(t, "same-origin", h.withOrigin("same-origin", h.sameOrigin()))
	h.expectAccepted(t, "no-origin", h.dialOptions("no-origin"))

	for _, origin := range []string{
		"http://other.example",
		"http://evil.example.attacker.net", // a lookalike that starts with a listed host
		"http://notevil.example",
		"https://trusted.example.attacker.net",
	} {
		h.expectRefused(t, origin, h.withOrigin("refused "+origin, origin), http.StatusForbidden)
	}
}

// TestOriginCheckSkippedWhenAskedTo checks that InsecureSkipOriginCheck
// admits any origin.
func TestOriginCheckSkippedWhenAskedTo(t *testing.T) {
	h := startServer(t, troupe.Config{Settings: troupe.Settings{InsecureSkipOriginCheck: true}})
	for i, origin := range []string{"http://evil.example", "https://anything.example:8443", h.sameOrigin()} {
		name := fmt.Sprintf("origin-%d", i)
		h.expectAccepted(t, name, h.withOrigin(name, origin))
	}
	h.expectAccepted(t, "no-origin", h.dialOptions("no-origin"))
}

// dialURL connects a client to url (the test server's, with a query).
func (h *testServer) dialURL(t *testing.T, name, url string, opts *websocket.DialOptions) (*client, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, status, err
	}
	c := &client{name: name, ws: ws, changed: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(c.shutdown)
	return c, http.StatusSwitchingProtocols, nil
}

// TestAuthorizeIdentityAndRefusals checks the authentication hook at the
// upgrade: it sees the request's headers, cookies and query; its identity
// is on the session for handlers to read; an error refuses with 401 and one
// wrapping ErrForbidden with 403, before any session exists.
func TestAuthorizeIdentityAndRefusals(t *testing.T) {
	tokens := map[string]string{"t-alice": "alice", "t-bob": "bob"}
	h := startServer(t, troupe.Config{
		Authorize: func(r *http.Request) (string, error) {
			tok := r.URL.Query().Get("token")
			if tok == "" {
				tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			}
			if ck, err := r.Cookie("session"); tok == "" && err == nil {
				tok = ck.Value
			}
			if tok == "t-mallory" {
				return "", fmt.Errorf("mallory is banned: %w", troupe.ErrForbidden)
			}
			if who, ok := tokens[tok]; ok {
				return who, nil
			}
			return "", errors.New("unknown token")
		},
	})
	troupe.Handle(h.srv, "whoami", func(c *troupe.Context, _ struct{}) error {
		return c.Reply("you", c.Session().Identity())
	})
	whoami := func(c *client) string {
		c.startReading()
		c.send(t, "whoami", nil)
		return decodePayload[string](t, c.expect(t, "you"))
	}

	// Query parameter.
	c, status, err := h.dialURL(t, "by-query", h.url+"?token=t-alice", h.dialOptions("by-query"))
	if err != nil {
		t.Fatalf("dial with a good token in the query: HTTP %d (%v)", status, err)
	}
	if got := whoami(c); got != "alice" {
		t.Errorf("identity from the query: handler read %q, want alice", got)
	}
	if got := h.rec.session(t, "by-query").Identity(); got != "alice" {
		t.Errorf("identity from the query: Session.Identity() = %q, want alice", got)
	}

	// Header.
	opts := h.dialOptions("by-header")
	opts.HTTPHeader.Set("Authorization", "Bearer t-bob")
	if got := whoami(h.dialWith(t, "by-header", opts)); got != "bob" {
		t.Errorf("identity from the Authorization header: %q, want bob", got)
	}

	// Cookie.
	opts = h.dialOptions("by-cookie")
	opts.HTTPHeader.Set("Cookie", "theme=dark; session=t-alice")
	if got := whoami(h.dialWith(t, "by-cookie", opts)); got != "alice" {
		t.Errorf("identity from the cookie: %q, want alice", got)
	}

	for _, tc := range []struct {
		name, header string
		want         int
	}{
		{"no-credentials", "", http.StatusUnauthorized},
		{"bad-token", "Bearer t-nobody", http.StatusUnauthorized},
		{"banned", "Bearer t-mallory", http.StatusForbidden},
	} {
		opts := h.dialOptions(tc.name)
		if tc.header != "" {
			opts.HTTPHeader.Set("Authorization", tc.header)
		}
		h.expectRefused(t, tc.name, opts, tc.want)
	}
	if _, status, err := h.dialURL(t, "bad-query", h.url+"?token=t-mallory", h.dialOptions("bad-query")); err == nil || status != http.StatusForbidden {
		t.Errorf("banned token in the query: HTTP %d (%v), want 403", status, err)
	}

	opens, _ := h.rec.counts()
	if opens != 3 {
		t.Errorf("%d sessions opened, want 3 (refused upgrades must not open any)", opens)
	}
}

// refusalBody dials with opts and returns the status and body of the refused
// upgrade.
func (h *testServer) refusalBody(t *testing.T, opts *websocket.DialOptions, bound time.Duration) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, h.url, opts)
	if err == nil {
		_ = ws.CloseNow()
		t.Fatalf("upgrade accepted, want it refused")
	}
	if resp == nil {
		t.Fatalf("no HTTP answer within %v: %v", bound, err)
	}
	var body strings.Builder
	if resp.Body != nil {
		buf := make([]byte, 1024)
		n, _ := resp.Body.Read(buf)
		body.Write(buf[:n])
	}
	return resp.StatusCode, body.String()
}

// TestAuthorizeTimesOut checks the handshake deadline: an authentication
// hook still waiting (here on a backend that never answers, honouring the
// request's context) when HandshakeTimeout passes is refused with 401
// "authentication timed out", even if it then returns an identity, and no
// session opens.
func TestAuthorizeTimesOut(t *testing.T) {
	var calls atomic.Int32
	h := startServer(t, troupe.Config{
		Settings: troupe.Settings{HandshakeTimeout: 200 * time.Millisecond},
		Authorize: func(r *http.Request) (string, error) {
			calls.Add(1)
			if r.Header.Get("X-Fast") != "" {
				return "quick", nil
			}
			<-r.Context().Done()
			return "too-late", nil
		},
	})

	opts := h.dialOptions("slow")
	status, body := h.refusalBody(t, opts, waitTimeout)
	if status != http.StatusUnauthorized || !strings.Contains(body, "authentication timed out") {
		t.Errorf("slow Authorize: HTTP %d %q, want 401 \"authentication timed out\"", status, body)
	}
	if calls.Load() != 1 {
		t.Errorf("Authorize ran %d times, want 1", calls.Load())
	}

	// A prompt hook on the same server is unaffected.
	opts = h.dialOptions("fast")
	opts.HTTPHeader.Set("X-Fast", "1")
	c := h.dialWith(t, "fast", opts)
	c.startReading()
	if got := h.rec.session(t, "fast").Identity(); got != "quick" {
		t.Errorf("fast Authorize: identity %q, want quick", got)
	}
	opens, _ := h.rec.counts()
	if opens != 1 {
		t.Errorf("%d sessions opened, want 1 (the timed-out upgrade must not open one)", opens)
	}
	if n := len(h.srv.Sessions()); n != 1 {
		t.Errorf("%d sessions open, want 1", n)
	}
}

// TestAuthorizeDeadlineBoundsAHookThatIgnoresIt checks the documented bound
// on the handshake for a hook that does not watch its request's context
// (a blocking call into a library without a context): the client is still
// answered 401 once HandshakeTimeout has passed rather than kept waiting for
// the hook, and no session opens even when the hook finally returns an
// identity.
func TestAuthorizeDeadlineBoundsAHookThatIgnoresIt(t *testing.T) {
	release := make(chan struct{})
	returned := make(chan struct{})
	h := startServer(t, troupe.Config{
		Settings: troupe.Settings{HandshakeTimeout: 200 * time.Millisecond},
		Authorize: func(r *http.Request) (string, error) {
			defer close(returned)
			<-release
			return "too-late", nil
		},
	})
	// Before the server's cleanup, which waits for its handlers.
	defer func() {
		close(release)
		select {
		case <-returned:
		case <-afterTimeout():
			t.Errorf("Authorize did not return after release")
		}
	}()

	// Far above the deadline, far below the wait for a hook that is never
	// released.
	const bound = 3 * time.Second
	status, body := h.refusalBody(t, h.dialOptions("stuck"), bound)
	if status != http.StatusUnauthorized {
		t.Errorf("Authorize stuck past HandshakeTimeout: HTTP %d %q, want 401", status, body)
	}
	if opens, _ := h.rec.counts(); opens != 0 {
		t.Errorf("%d sessions opened, want none", opens)
	}
}

// TestAuthorizeJoinRefusal checks join authorization on every way into a
// room: a refused join answers an error envelope with code "forbidden" and
// the request's id, and leaves the session in no room and the room without
// the session; the hook sees the session's identity; allowed joins work.
func TestAuthorizeJoinRefusal(t *testing.T) {
	type ask struct{ who, room string }
	var mu sync.Mutex
	var asked []ask
	h := startServer(t, troupe.Config{
		RoomProtocol: true,
		Authorize: func(r *http.Request) (string, error) {
			return r.Header.Get("X-User"), nil
		},
		AuthorizeJoin: func(s *troupe.Session, room string) error {
			mu.Lock()
			asked = append(asked, ask{s.Identity(), room})
			mu.Unlock()
			if strings.HasPrefix(room, "staff") && s.Identity() != "alice" {
				return errors.New("staff only")
			}
			return nil
		},
	})
	registerJoin(h.srv)

	bob := h.dialPeer(t, "bob", "bob")
	bobS := h.rec.session(t, "bob")
	alice := h.dialPeer(t, "alice", "alice")
	aliceS := h.rec.session(t, "alice")

	refusedEverywhere := func(what, room string) {
		t.Helper()
		if rs := h.srv.RoomsOf(bobS); len(rs) != 0 {
			t.Errorf("%s: bob is in %v after a refused join", what, rs)
		}
		if ids := serverMemberIDs(t, h.srv, room); slices.Contains(ids, "bob") {
			t.Errorf("%s: room %q has members %v, bob among them", what, room, ids)
		}
	}

	// A typed handler calling Context.Join.
	id := bob.post(t, "join", joinMsg{Room: "staff"})
	e := bob.await(t, id)
	expectError(t, "typed join refused", e, "forbidden")
	if string(e.ID) != id {
		t.Errorf("typed join refused: error has id %s, want %s", e.ID, id)
	}
	refusedEverywhere("typed join", "staff")
	if slices.Contains(h.srv.Rooms(), "staff") {
		t.Errorf("room staff exists after its only join was refused: %v", h.srv.Rooms())
	}

	// The room protocol's room.join, while the room does not exist ...
	id = bob.post(t, "room.join", joinRequest("staff", nil, nil))
	e = bob.await(t, id)
	expectError(t, "room.join refused", e, "forbidden")
	if string(e.ID) != id {
		t.Errorf("room.join refused: error has id %s, want %s", e.ID, id)
	}
	refusedEverywhere("room.join", "staff")

	// ... and while it does.
	alice.joinRoom(t, "staff", nil, nil)
	id = bob.post(t, "room.join", joinRequest("staff", nil, nil))
	expectError(t, "room.join refused (room exists)", bob.await(t, id), "forbidden")
	id = bob.post(t, "join", joinMsg{Room: "staff"})
	expectError(t, "typed join refused (room exists)", bob.await(t, id), "forbidden")
	refusedEverywhere("joins of an existing room", "staff")
	if ids := serverMemberIDs(t, h.srv, "staff"); !slices.Equal(ids, []string{"alice"}) {
		t.Errorf("staff has members %v after refused joins, want [alice]", ids)
	}

	// The server API gives the same refusal, with the code for the client.
	err := h.srv.Join(context.Background(), "staff-2", bobS)
	var te *troupe.Error
	if !errors.As(err, &te) || te.Code != "forbidden" {
		t.Errorf("Server.Join refused: %v, want a *troupe.Error with code forbidden", err)
	}
	refusedEverywhere("Server.Join", "staff-2")

	// Allowed joins work on every path.
	if e := bob.request(t, "join", joinMsg{Room: "lobby"}); e.Type != "joined" {
		t.Errorf("typed join of an open room answered %s %s", e.Type, e.Payload)
	}
	bob.joinRoom(t, "hall", nil, nil)
	if err := h.srv.Join(context.Background(), "staff-2", aliceS); err != nil {
		t.Errorf("Server.Join allowed for alice: %v", err)
	}
	if rs := h.srv.RoomsOf(bobS); !slices.Equal(rs, []string{"hall", "lobby"}) {
		t.Errorf("bob is in %v, want [hall lobby]", rs)
	}
	if rs := h.srv.RoomsOf(aliceS); !slices.Equal(rs, []string{"staff", "staff-2"}) {
		t.Errorf("alice is in %v, want [staff staff-2]", rs)
	}

	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(asked, ask{"bob", "staff"}) || !slices.Contains(asked, ask{"alice", "staff"}) {
		t.Errorf("AuthorizeJoin was asked %v; want it to see each session's identity", asked)
	}
}

type rateMsg struct {
	N int `json:"n"`
}

// rateServer starts a server with the given rate limit whose "count"
// handler counts the messages it handles per client and answers "counted".
func rateServer(t *testing.T, limit float64, burst int) (*testServer, func(name string) int) {
	t.Helper()
	var mu sync.Mutex
	handled := map[string]int{}
	h := startServer(t, troupe.Config{Settings: troupe.Settings{RateLimit: limit, RateBurst: burst}})
	troupe.Handle(h.srv, "count", func(c *troupe.Context, m rateMsg) error {
		mu.Lock()
		handled[c.Session().Header().Get(clientHeader)]++
		mu.Unlock()
		return c.Reply("counted", m)
	})
	return h, func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		return handled[name]
	}
}

// sendCounts sends n "count" messages numbered from first, then takes the n
// answers, and returns the numbers that were handled and how many were
// refused with "rate_limited".
func sendCounts(t *testing.T, c *client, first, n int) (handled []int, limited int) {
	t.Helper()
	for i := range n {
		c.send(t, "count", rateMsg{N: first + i})
	}
	for range n {
		e := c.nextEnvelope(t)
		switch e.Type {
		case "counted":
			handled = append(handled, decodePayload[rateMsg](t, e).N)
		case "error":
			expectError(t, c.name+": refused message", e, "rate_limited")
			limited++
		default:
			t.Fatalf("%s: got %s %s, want counted or a rate_limited error", c.name, e.Type, e.Payload)
		}
	}
	return handled, limited
}

// TestRateLimitRefusesOverBurstAndRecovers checks the per-session rate
// limit: a burst of RateBurst messages is handled; messages beyond it are
// answered "rate_limited" and never reach the handler; RateBurst refusals in
// a row do not yet close the session; once the bucket has refilled the
// client can send a full burst again.
func TestRateLimitRefusesOverBurstAndRecovers(t *testing.T) {
	const limit, burst = 50, 10
	h, handledBy := rateServer(t, limit, burst)
	c := h.dial(t, "fast")
	c.startReading()

	// Twice the burst at once: the first RateBurst are handled, and at most
	// RateBurst are refused (the bucket refills one message per 20ms, which
	// can let one more through on a slow machine, never fewer).
	handled, limited := sendCounts(t, c, 0, 2*burst)
	if len(handled) < burst || !slices.Equal(handled[:burst], seqRange0(burst)) {
		t.Fatalf("handled %v, want at least messages 0..%d in order", handled, burst-1)
	}
	if limited == 0 {
		t.Fatalf("all %d messages sent at once were handled, want those over the burst of %d refused", 2*burst, burst)
	}
	if got := handledBy("fast"); got != len(handled) {
		t.Errorf("handler ran %d times, but %d messages were answered counted: refused messages reached the handler", got, len(handled))
	}
	t.Logf("%d handled, %d rate_limited", len(handled), limited)

	// The time the bucket needs to refill completely, plus a margin: the
	// wait is the behaviour under test, not a guess at how long something
	// takes.
	time.Sleep(time.Duration(float64(burst)/limit*float64(time.Second)) + 100*time.Millisecond)
	again, limitedAgain := sendCounts(t, c, 1000, burst)
	if limitedAgain != 0 || len(again) != burst {
		t.Errorf("after the bucket refilled: %d handled, %d refused, want the whole burst of %d handled", len(again), limitedAgain, burst)
	}
	if got, want := handledBy("fast"), len(handled)+len(again); got != want {
		t.Errorf("handler ran %d times, want %d", got, want)
	}
	if s := h.rec.session(t, "fast"); !s.IsOpen() {
		t.Errorf("session closed after %d refusals in a row, want open (the close comes after more than %d)", limited, burst)
	}
}

func seqRange0(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestRateLimitClosesAFloodingClient checks that a client that goes on
// sending far over the limit is closed with 1008 "rate limit exceeded",
// after the rate_limited answers it was given, and that the flood costs
// other clients nothing: their own burst is handled in full.
func TestRateLimitClosesAFloodingClient(t *testing.T) {
	const limit, burst = 50, 10
	h, handledBy := rateServer(t, limit, burst)
	calm := h.dial(t, "calm")
	calm.startReading()
	flood := h.dial(t, "flood")
	flood.startReading()
	floodS := h.rec.session(t, "flood")

	sent := 0
	msg := mustEnvelope(t, "count", rateMsg{}, nil)
flooding:
	for ; sent < 100*burst; sent++ {
		select {
		case <-flood.done:
			break flooding
		default:
		}
		if err := flood.writeErr(msg); err != nil {
			break
		}
	}
	rest, err := flood.waitEnd(t)
	if code, reason := closeCode(err); code != websocket.StatusPolicyViolation || reason != "rate limit exceeded" {
		t.Errorf("flooding client: close %d %q after %d messages, want 1008 \"rate limit exceeded\"", code, reason, sent)
	}
	limited := 0
	for _, f := range rest {
		if e := decodeEnvelope(t, f); e.Type == "error" {
			expectError(t, "flood answer", e, "rate_limited")
			limited++
		}
	}
	if limited < burst {
		t.Errorf("flooding client got %d rate_limited answers before the close, want at least %d", limited, burst)
	}
	if ev := h.rec.waitClose(t, floodS); ev.code != troupe.ClosePolicyViolation || ev.reason != "rate limit exceeded" {
		t.Errorf("OnClose(flood) = %d %q, want 1008 \"rate limit exceeded\"", ev.code, ev.reason)
	}
	t.Logf("flood: %d sent, %d handled, %d rate_limited", sent, handledBy("flood"), limited)

	// The calm client's bucket is its own: a full burst right after the
	// flood is handled.
	handled, refused := sendCounts(t, calm, 0, burst)
	if refused != 0 || len(handled) != burst {
		t.Errorf("calm client after the flood: %d handled, %d refused, want all %d handled", len(handled), refused, burst)
	}
	if !h.rec.session(t, "calm").IsOpen() {
		t.Errorf("calm client's session closed")
	}
}

// TestMaxConnectionsRefusesWith503 checks the connection cap: with
// MaxConnections open, another upgrade is answered 503 and opens nothing
// while the open ones keep working; once one of them has closed, a new
// client is accepted in its place. The new client dials while the closed
// session's OnClose is still running (an application persisting state, for
// example): the connection is gone by then, so its place must be free, and
// this makes the check independent of how soon after OnClose the place is
// given back.
func TestMaxConnectionsRefusesWith503(t *testing.T) {
	const max = 3
	proceed := make(chan struct{})
	h := startServer(t, troupe.Config{
		Settings: troupe.Settings{MaxConnections: max},
		OnClose: func(s *troupe.Session, _ int, _ string) {
			if s.Header().Get(clientHeader) == "c0" {
				<-proceed
			}
		},
	})
	var once sync.Once
	letCloseFinish := func() { once.Do(func() { close(proceed) }) }
	defer letCloseFinish()

	var clients []*client
	for i := range max {
		name := fmt.Sprintf("c%d", i)
		c := h.dial(t, name)
		c.startReading()
		h.rec.session(t, name)
		clients = append(clients, c)
	}

	h.expectRefused(t, "one connection over the limit", h.dialOptions("over"), http.StatusServiceUnavailable)
	h.expectRefused(t, "another one over the limit", h.dialOptions("over-2"), http.StatusServiceUnavailable)
	for _, c := range clients {
		c.send(t, "ping", nil)
		c.expect(t, "pong")
	}

	first := h.rec.session(t, "c0")
	if err := clients[0].ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close c0: %v", err)
	}
	h.rec.waitClose(t, first) // OnClose has been called and is now waiting

	next := h.dial(t, "next")
	next.startReading()
	next.send(t, "ping", nil)
	next.expect(t, "pong")
	letCloseFinish()
	h.expectRefused(t, "over the limit again", h.dialOptions("over-3"), http.StatusServiceUnavailable)

	opens, _ := h.rec.counts()
	if opens != max+1 {
		t.Errorf("%d sessions opened, want %d (refused upgrades must not open any)", opens, max+1)
	}
}

// TestHardeningRoomsPerSessionLimit checks MaxRoomsPerSession on the wire
// and on the server API: the join beyond the limit is refused with
// "too_many_rooms" (ErrTooManyRooms) and changes nothing, joining a room
// the session is already in does not count, and leaving a room frees a
// place.
func TestHardeningRoomsPerSessionLimit(t *testing.T) {
	h := startServer(t, troupe.Config{MaxRoomsPerSession: 2, RoomProtocol: true})
	registerJoin(h.srv)
	p := h.dialPeer(t, "p", "")
	s := h.rec.session(t, "p")

	for _, room := range []string{"a", "b"} {
		if e := p.request(t, "join", joinMsg{Room: room}); e.Type != "joined" {
			t.Fatalf("join %q answered %s %s", room, e.Type, e.Payload)
		}
	}
	id := p.post(t, "join", joinMsg{Room: "c"})
	e := p.await(t, id)
	expectError(t, "third room (typed join)", e, "too_many_rooms")
	if string(e.ID) != id {
		t.Errorf("third room: error has id %s, want %s", e.ID, id)
	}
	expectError(t, "third room (room.join)", p.request(t, "room.join", joinRequest("c", nil, nil)), "too_many_rooms")

	// Rejoining a room it is in is not a third room.
	if e := p.request(t, "join", joinMsg{Room: "a"}); e.Type != "joined" {
		t.Errorf("rejoin of a answered %s %s", e.Type, e.Payload)
	}
	if err := h.srv.Join(context.Background(), "b", s); err != nil {
		t.Errorf("Server.Join of a room it is in: %v", err)
	}

	err := h.srv.Join(context.Background(), "c", s)
	if !errors.Is(err, troupe.ErrTooManyRooms) {
		t.Errorf("Server.Join of a third room: %v, want ErrTooManyRooms", err)
	}
	var te *troupe.Error
	if !errors.As(err, &te) || te.Code != "too_many_rooms" {
		t.Errorf("Server.Join of a third room: %v, want code too_many_rooms", err)
	}
	if rs := h.srv.RoomsOf(s); !slices.Equal(rs, []string{"a", "b"}) {
		t.Errorf("in %v after refused joins, want [a b]", rs)
	}
	if ids := serverMemberIDs(t, h.srv, "c"); len(ids) != 0 {
		t.Errorf("room c has members %v after refused joins", ids)
	}

	if err := h.srv.Leave(context.Background(), "b", s); err != nil {
		t.Fatalf("leave b: %v", err)
	}
	if e := p.request(t, "join", joinMsg{Room: "c"}); e.Type != "joined" {
		t.Errorf("join c after leaving b answered %s %s", e.Type, e.Payload)
	}
	if rs := h.srv.RoomsOf(s); !slices.Equal(rs, []string{"a", "c"}) {
		t.Errorf("in %v, want [a c]", rs)
	}
}

// TestHardeningRoomMembersLimit checks MaxRoomMembers: the member beyond the
// limit is refused with "room_full" (ErrRoomFull) on every path and the room
// is unchanged, a member rejoining a full room is not refused, and a place
// freed by a member that goes is taken by the next.
func TestHardeningRoomMembersLimit(t *testing.T) {
	const room = "lobby"
	h := startServer(t, troupe.Config{MaxRoomMembers: 2, RoomProtocol: true})
	registerJoin(h.srv)
	var peers []*peer
	for _, name := range []string{"m1", "m2", "m3"} {
		peers = append(peers, h.dialPeer(t, name, ""))
	}
	m1, m2, m3 := peers[0], peers[1], peers[2]
	m1.joinRoom(t, room, nil, nil)
	if e := m2.request(t, "join", joinMsg{Room: room}); e.Type != "joined" {
		t.Fatalf("second member's join answered %s %s", e.Type, e.Payload)
	}
	want := []string{m1.sid, m2.sid}
	slices.Sort(want)

	id := m3.post(t, "join", joinMsg{Room: room})
	e := m3.await(t, id)
	expectError(t, "third member (typed join)", e, "room_full")
	if string(e.ID) != id {
		t.Errorf("third member: error has id %s, want %s", e.ID, id)
	}
	expectError(t, "third member (room.join)", m3.request(t, "room.join", joinRequest(room, nil, nil)), "room_full")
	m3S := h.rec.session(t, "m3")
	if err := h.srv.Join(context.Background(), room, m3S); !errors.Is(err, troupe.ErrRoomFull) {
		t.Errorf("Server.Join of a third member: %v, want ErrRoomFull", err)
	}
	if rs := h.srv.RoomsOf(m3S); len(rs) != 0 {
		t.Errorf("m3 is in %v after refused joins", rs)
	}
	if ids := serverMemberIDs(t, h.srv, room); !slices.Equal(ids, want) {
		t.Errorf("members %v after refused joins, want %v", ids, want)
	}

	// A member is not refused its own place.
	m1.joinRoom(t, room, nil, nil)
	if e := m2.request(t, "join", joinMsg{Room: room}); e.Type != "joined" {
		t.Errorf("rejoin of a full room by a member answered %s %s", e.Type, e.Payload)
	}

	// m2 goes; its place is free.
	m2S := h.rec.session(t, "m2")
	if err := m2.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close m2: %v", err)
	}
	h.rec.waitClose(t, m2S)
	eventually(t, "m2 to leave the room", func() bool { return len(serverMemberIDs(t, h.srv, room)) == 1 })
	m3.joinRoom(t, room, nil, nil)
	want = []string{m1.sid, m3.sid}
	slices.Sort(want)
	if ids := serverMemberIDs(t, h.srv, room); !slices.Equal(ids, want) {
		t.Errorf("members %v, want %v", ids, want)
	}
}

// TestAuthorizeRefusalsTellNothing checks what a refused client reads in
// the body: the status's own text, never the error Authorize returned
// (which can say which users exist or why a token failed), unless the
// application chose the message with a *troupe.Error.
func TestAuthorizeRefusalsTellNothing(t *testing.T) {
	h := startServer(t, troupe.Config{
		Authorize: func(r *http.Request) (string, error) {
			switch r.Header.Get("Authorization") {
			case "expired":
				return "", troupe.NewError("expired", "your session expired; log in again")
			case "banned":
				return "", fmt.Errorf("user 42 banned by rule r-17: %w", troupe.ErrForbidden)
			case "panic":
				panic("database at 10.1.2.3 unreachable")
			}
			return "", errors.New("no row for token in users table")
		},
	})
	for _, tc := range []struct {
		name, header string
		status       int
		body         string
	}{
		{"plain", "whatever", http.StatusUnauthorized, "Unauthorized"},
		{"banned", "banned", http.StatusForbidden, "Forbidden"},
		{"panic", "panic", http.StatusInternalServerError, "Internal Server Error"},
		{"chosen", "expired", http.StatusUnauthorized, "your session expired; log in again"},
	} {
		opts := h.dialOptions(tc.name)
		opts.HTTPHeader.Set("Authorization", tc.header)
		status, body := h.refusalBody(t, opts, waitTimeout)
		if status != tc.status || strings.TrimSpace(body) != tc.body {
			t.Errorf("%s: HTTP %d %q, want %d %q", tc.name, status, body, tc.status, tc.body)
		}
	}
}
