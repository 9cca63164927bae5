package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
)

// wait bounds every wait for the server, so a missing message fails the
// test instead of hanging it.
const wait = 5 * time.Second

// The wire format as a client reads it. The tests decode into these rather
// than the server's own types, so that a wrong JSON tag on the server shows.
type (
	envelope struct {
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
		ID      json.RawMessage `json:"id"`
	}
	wireMember struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	wireJoined struct {
		Room    string       `json:"room"`
		You     wireMember   `json:"you"`
		Members []wireMember `json:"members"`
	}
	wirePresence struct {
		Room   string      `json:"room"`
		Joined *wireMember `json:"joined"`
		Left   *wireMember `json:"left"`
	}
	wireMessage struct {
		Room string     `json:"room"`
		From wireMember `json:"from"`
		Text string     `json:"text"`
		TS   int64      `json:"ts"`
	}
	wireTyping struct {
		Room string     `json:"room"`
		From wireMember `json:"from"`
	}
	wireError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
)

// startChat serves the chat on 127.0.0.1 and stops it when the test ends.
func startChat(t *testing.T) *httptest.Server {
	t.Helper()
	handler, srv, err := newServer(troupe.Settings{})
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	ts := httptest.NewServer(handler)
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		// Troupe first: httptest.Server.Close does not wait for
		// connections that were upgraded to WebSockets.
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return ts
}

type client struct {
	t    *testing.T
	conn *websocket.Conn
	me   wireMember // set by join
}

func dial(t *testing.T, ts *httptest.Server) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	return &client{t: t, conn: conn}
}

func (c *client) send(typ string, payload any, id any) {
	c.t.Helper()
	env := map[string]any{"type": typ}
	if payload != nil {
		env["payload"] = payload
	}
	if id != nil {
		env["id"] = id
	}
	b, err := json.Marshal(env)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write %s: %v", typ, err)
	}
}

// next reads the next envelope.
func (c *client) next() envelope {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for {
		_, data, err := c.conn.Read(ctx)
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		var env envelope
		if err := json.Unmarshal(data, &env); err != nil {
			c.t.Fatalf("not an envelope: %s", data)
		}
		// A request the handler did not answer itself gets an empty
		// reply; its place relative to room broadcasts is not fixed.
		if env.Type == "reply" && len(env.Payload) == 0 {
			continue
		}
		return env
	}
}

// expect reads the next envelope, requires its type and decodes its payload
// into out.
func (c *client) expect(typ string, out any) envelope {
	c.t.Helper()
	env := c.next()
	if env.Type != typ {
		c.t.Fatalf("got %s %s, want %s", env.Type, env.Payload, typ)
	}
	if out != nil {
		if err := json.Unmarshal(env.Payload, out); err != nil {
			c.t.Fatalf("%s payload %s: %v", typ, env.Payload, err)
		}
	}
	return env
}

// expectError reads an error envelope and requires its code and the id of
// the request it answers.
func (c *client) expectError(code string, id string) {
	c.t.Helper()
	var e wireError
	env := c.expect("error", &e)
	if e.Code != code {
		c.t.Fatalf("error code %q (%s), want %q", e.Code, e.Message, code)
	}
	if string(env.ID) != id {
		c.t.Fatalf("error id %s, want %s", env.ID, id)
	}
}

// join joins room as name and returns the member list of the reply.
func (c *client) join(room, name string) []wireMember {
	c.t.Helper()
	c.send("chat.join", map[string]string{"room": room, "name": name}, "join-"+room)
	var j wireJoined
	env := c.expect("chat.joined", &j)
	if string(env.ID) != `"join-`+room+`"` {
		c.t.Fatalf("chat.joined id %s, want the request's", env.ID)
	}
	if j.Room != room {
		c.t.Fatalf("chat.joined room %q, want %q", j.Room, room)
	}
	c.me = j.You
	return j.Members
}

func (c *client) expectPresence(room string, joined, left *wireMember) {
	c.t.Helper()
	var p wirePresence
	c.expect("chat.presence", &p)
	want := wirePresence{Room: room, Joined: joined, Left: left}
	if !reflect.DeepEqual(p, want) {
		c.t.Fatalf("presence %+v, want %+v", p, want)
	}
}

func (c *client) expectMessage(room string, from wireMember, text string) wireMessage {
	c.t.Helper()
	var m wireMessage
	c.expect("chat.message", &m)
	if m.Room != room || m.From != from || m.Text != text {
		c.t.Fatalf("message %+v, want room %q from %+v text %q", m, room, from, text)
	}
	return m
}

func TestJoinRepliesWithMembersAndTellsTheOthers(t *testing.T) {
	ts := startChat(t)
	alice, bob := dial(t, ts), dial(t, ts)

	if got := alice.join("lobby", "alice"); !reflect.DeepEqual(got, []wireMember{alice.me}) {
		t.Fatalf("alice sees members %+v, want only herself %+v", got, alice.me)
	}
	if alice.me.Name != "alice" || alice.me.ID == "" {
		t.Fatalf("alice is %+v", alice.me)
	}

	got := bob.join("lobby", "bob")
	if want := []wireMember{alice.me, bob.me}; !reflect.DeepEqual(got, want) {
		t.Fatalf("bob sees members %+v, want %+v", got, want)
	}
	if bob.me.ID == alice.me.ID {
		t.Fatalf("two sessions share the id %q", bob.me.ID)
	}
	alice.expectPresence("lobby", &bob.me, nil)
}

func TestJoinNames(t *testing.T) {
	ts := startChat(t)
	c := dial(t, ts)

	c.join("a", "  carol  ")
	if c.me.Name != "carol" {
		t.Errorf("name %q, want it trimmed to %q", c.me.Name, "carol")
	}
	c.join("b", " \t ")
	if c.me.Name != "anon" {
		t.Errorf("blank name became %q, want anon", c.me.Name)
	}
	long := strings.Repeat("é", 32) // 32 characters, 64 bytes
	c.join("c", long)
	if c.me.Name != long {
		t.Errorf("32-character name became %q", c.me.Name)
	}
	c.send("chat.join", map[string]string{"room": "d", "name": long + "x"}, 1)
	c.expectError("invalid", "1")
	c.send("chat.join", map[string]string{"room": "  ", "name": "dave"}, 2)
	c.expectError("invalid", "2")
}

func TestMessageReachesEveryMemberWithSenderAndTime(t *testing.T) {
	ts := startChat(t)
	alice, bob, outsider := dial(t, ts), dial(t, ts), dial(t, ts)
	alice.join("lobby", "alice")
	bob.join("lobby", "bob")
	alice.expectPresence("lobby", &bob.me, nil)
	outsider.join("elsewhere", "eve")

	before := time.Now().UnixMilli()
	alice.send("chat.message", map[string]string{"room": "lobby", "text": "hello, bob"}, nil)
	m := alice.expectMessage("lobby", alice.me, "hello, bob")
	bob.expectMessage("lobby", alice.me, "hello, bob")
	after := time.Now().UnixMilli()
	if m.TS < before || m.TS > after {
		t.Errorf("ts %d is not the send time (between %d and %d)", m.TS, before, after)
	}

	// The outsider's next message is its own: nothing from lobby came first.
	outsider.send("chat.message", map[string]string{"room": "elsewhere", "text": "anyone?"}, nil)
	outsider.expectMessage("elsewhere", outsider.me, "anyone?")
}

func TestMessageTextLimits(t *testing.T) {
	ts := startChat(t)
	c := dial(t, ts)
	c.join("lobby", "alice")

	c.send("chat.message", map[string]string{"room": "lobby", "text": ""}, 1)
	c.expectError("invalid", "1")
	c.send("chat.message", map[string]string{"room": "lobby", "text": " \n\t "}, 2)
	c.expectError("invalid", "2")
	c.send("chat.message", map[string]string{"room": "lobby", "text": strings.Repeat("x", 2001)}, 3)
	c.expectError("invalid", "3")

	// The limit counts characters, not bytes: 2000 two-byte characters pass.
	full := strings.Repeat("ü", 2000)
	c.send("chat.message", map[string]string{"room": "lobby", "text": full}, 4)
	c.expectMessage("lobby", c.me, full)
}

func TestNotMember(t *testing.T) {
	ts := startChat(t)
	alice, bob := dial(t, ts), dial(t, ts)
	alice.join("lobby", "alice")

	bob.send("chat.message", map[string]string{"room": "lobby", "text": "let me in"}, "m")
	bob.expectError("not_member", `"m"`)
	bob.send("chat.typing", map[string]string{"room": "lobby"}, "t")
	bob.expectError("not_member", `"t"`)
	bob.send("chat.leave", map[string]string{"room": "lobby"}, "l")
	bob.expectError("not_member", `"l"`)

	// None of it reached the room: alice's next message is her own.
	alice.send("chat.message", map[string]string{"room": "lobby", "text": "quiet here"}, nil)
	alice.expectMessage("lobby", alice.me, "quiet here")
}

func TestTypingGoesToTheOthersOnly(t *testing.T) {
	ts := startChat(t)
	alice, bob := dial(t, ts), dial(t, ts)
	alice.join("lobby", "alice")
	bob.join("lobby", "bob")
	alice.expectPresence("lobby", &bob.me, nil)

	bob.send("chat.typing", map[string]string{"room": "lobby"}, nil)
	var ty wireTyping
	alice.expect("chat.typing", &ty)
	if want := (wireTyping{Room: "lobby", From: bob.me}); ty != want {
		t.Fatalf("typing %+v, want %+v", ty, want)
	}

	// The room fanned the typing notice out before alice got it, so a typing
	// notice for bob would be in his queue before this message.
	alice.send("chat.message", map[string]string{"room": "lobby", "text": "go on"}, nil)
	bob.expectMessage("lobby", alice.me, "go on")
}

func TestLeave(t *testing.T) {
	ts := startChat(t)
	alice, bob := dial(t, ts), dial(t, ts)
	alice.join("lobby", "alice")
	bob.join("lobby", "bob")
	alice.expectPresence("lobby", &bob.me, nil)

	bob.send("chat.leave", map[string]string{"room": "lobby"}, 7)
	var left struct {
		Room string `json:"room"`
	}
	if env := bob.expect("chat.left", &left); string(env.ID) != "7" || left.Room != "lobby" {
		t.Fatalf("chat.left %s id %s, want room lobby and id 7", env.Payload, env.ID)
	}
	alice.expectPresence("lobby", nil, &bob.me)

	bob.send("chat.message", map[string]string{"room": "lobby", "text": "still here?"}, 8)
	bob.expectError("not_member", "8")

	// Back in, bob is a member again and alice hears of it.
	if got := bob.join("lobby", "bob"); len(got) != 2 {
		t.Fatalf("members after rejoining: %+v", got)
	}
	alice.expectPresence("lobby", &bob.me, nil)
}

func TestDisconnectTellsEveryRoom(t *testing.T) {
	ts := startChat(t)
	alice, bob := dial(t, ts), dial(t, ts)
	for _, room := range []string{"lobby", "games"} {
		alice.join(room, "alice")
		bob.join(room, "bob")
		alice.expectPresence(room, &bob.me, nil)
	}

	// Dropped without a close handshake, as when a laptop lid shuts.
	_ = bob.conn.CloseNow()

	left := map[string]bool{}
	for range 2 {
		var p wirePresence
		alice.expect("chat.presence", &p)
		if p.Left == nil || *p.Left != bob.me || p.Joined != nil {
			t.Fatalf("presence %+v, want bob %+v left", p, bob.me)
		}
		left[p.Room] = true
	}
	if !left["lobby"] || !left["games"] {
		t.Fatalf("bob was announced as gone from %v, want lobby and games", left)
	}

	// The rooms forgot him: a newcomer finds only alice there.
	carol := dial(t, ts)
	if got := carol.join("lobby", "carol"); !reflect.DeepEqual(got, []wireMember{alice.me, carol.me}) {
		t.Fatalf("members after bob dropped: %+v", got)
	}
}

func TestPingKeepsThePageAlive(t *testing.T) {
	ts := startChat(t)
	c := dial(t, ts)
	c.send("chat.ping", nil, 42)
	if env := c.expect("chat.pong", nil); string(env.ID) != "42" {
		t.Fatalf("chat.pong id %s, want 42", env.ID)
	}
}

func TestPageIsServed(t *testing.T) {
	ts := startChat(t)
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html", `<script src="app.js"></script>`},
		{"/app.js", "javascript", `new WebSocket(`},
		{"/style.css", "text/css", `.messages`},
	} {
		resp, err := ts.Client().Get(ts.URL + tc.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d", tc.path, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, tc.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(string(body), tc.contains) {
			t.Errorf("GET %s: body does not contain %q", tc.path, tc.contains)
		}
	}
}

// TestRunShutsDownGracefully checks what a client sees when the process gets
// SIGINT: a 1001 close, and run returning without error.
func TestRunShutsDownGracefully(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, ln, troupe.Settings{}) }()

	dctx, dcancel := context.WithTimeout(context.Background(), wait)
	defer dcancel()
	conn, _, err := websocket.Dial(dctx, "ws://"+ln.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	c := &client{t: t, conn: conn}
	c.join("lobby", "alice")

	cancel()
	rctx, rcancel := context.WithTimeout(context.Background(), wait)
	defer rcancel()
	_, _, err = conn.Read(rctx)
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
		t.Fatalf("read after shutdown: %v (close code %d), want 1001", err, code)
	}

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(2 * wait):
		t.Fatal("run did not return after its context ended")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("still accepting connections after shutdown")
	}
}

// TestMalformedEnvironmentExits runs main in a child process, since it
// exits.
func TestMalformedEnvironmentExits(t *testing.T) {
	if os.Getenv("CHAT_TEST_RUN_MAIN") == "1" {
		os.Args = []string{"chat", "-addr", "127.0.0.1:0"}
		main()
		return
	}
	// Bounded in case main, failing to exit, went on to serve.
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMalformedEnvironmentExits$")
	cmd.Env = append(os.Environ(), "CHAT_TEST_RUN_MAIN=1", "WEBSOCKET_IDLE_TIMEOUT=soon")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("chat with a malformed variable: %v, want exit status 2; stderr:\n%s", err, stderr.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "WEBSOCKET_IDLE_TIMEOUT") || !strings.Contains(msg, "soon") {
		t.Fatalf("message does not name the variable and its value:\n%s", msg)
	}
}
