package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/examples/chatserver"
	"github.com/troupehq/troupe/troupetest"
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
	wireWelcome struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	wireMember struct {
		ID   string          `json:"id"`
		Meta json.RawMessage `json:"meta"`
	}
	wireJoined struct {
		Room      string       `json:"room"`
		Seq       uint64       `json:"seq"`
		Members   []wireMember `json:"members"`
		Recovered bool         `json:"recovered"`
	}
	wirePresence struct {
		Room   string       `json:"room"`
		Joins  []wireMember `json:"joins"`
		Leaves []wireMember `json:"leaves"`
	}
	wireBody struct {
		Text string `json:"text"`
	}
	wireMessage struct {
		Room string   `json:"room"`
		Seq  uint64   `json:"seq"`
		From string   `json:"from"`
		Body wireBody `json:"body"`
	}
	wirePublished struct {
		Room string `json:"room"`
		Seq  uint64 `json:"seq"`
	}
	wireHistory struct {
		Room     string        `json:"room"`
		Messages []wireMessage `json:"messages"`
	}
	wireTyping struct {
		Room string `json:"room"`
		From string `json:"from"`
		Name string `json:"name"`
	}
	wireError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
)

// startChat serves the chat on 127.0.0.1 and stops it when the test ends.
func startChat(t *testing.T) *httptest.Server {
	t.Helper()
	handler, srv, err := chatserver.New(troupe.Config{})
	if err != nil {
		t.Fatalf("chatserver.New: %v", err)
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

// client is a chat client: a troupetest client that knows who it is.
type client struct {
	*troupetest.Client
	t  *testing.T
	me wireWelcome // from chat.welcome
}

func wsURL(ts *httptest.Server, name string) string {
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws?name=" + url.QueryEscape(name)
}

// dial connects as name and reads the chat.welcome that comes first.
func dial(t *testing.T, ts *httptest.Server, name string) *client {
	t.Helper()
	return welcome(t, troupetest.Dial(t, wsURL(ts, name), nil))
}

func welcome(t *testing.T, tc *troupetest.Client) *client {
	t.Helper()
	c := &client{Client: tc, t: t}
	c.Expect("chat.welcome", &c.me)
	return c
}

// expectError sends a request and requires an error answer with code.
func (c *client) expectError(code string, typ string, payload any) {
	c.t.Helper()
	err := c.Request(typ, payload, nil)
	var re *troupe.ReplyError
	if !errors.As(err, &re) || re.Code != code {
		c.t.Fatalf("%s answered %v, want an error %q", typ, err, code)
	}
}

// join joins room with meta (nil: none) and returns room.joined, the
// answer with the request's id.
func (c *client) join(room string, meta any) wireJoined {
	c.t.Helper()
	p := map[string]any{"room": room}
	if meta != nil {
		p["meta"] = meta
	}
	var j wireJoined
	if err := c.Request("room.join", p, &j); err != nil {
		c.t.Fatalf("join %s: %v", room, err)
	}
	if j.Room != room {
		c.t.Fatalf("room.joined room %q, want %q", j.Room, room)
	}
	return j
}

func publication(room, text string) map[string]any {
	return map[string]any{"room": room, "body": map[string]string{"text": text}}
}

func (c *client) publish(room, text string) {
	c.t.Helper()
	c.Send("room.publish", publication(room, text))
}

func (c *client) expectMessage(room string, seq uint64, from, text string) {
	c.t.Helper()
	var m wireMessage
	c.Expect("room.message", &m)
	if want := (wireMessage{Room: room, Seq: seq, From: from, Body: wireBody{Text: text}}); m != want {
		c.t.Fatalf("message %+v, want %+v", m, want)
	}
}

func (c *client) expectPresence(want wirePresence) {
	c.t.Helper()
	var p wirePresence
	c.Expect("presence.diff", &p)
	if !sameMembers(p.Joins, want.Joins) || !sameMembers(p.Leaves, want.Leaves) || p.Room != want.Room {
		c.t.Fatalf("presence.diff %+v, want %+v", p, want)
	}
}

// sameMembers compares member lists, their meta as JSON values.
func sameMembers(got, want []wireMember) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].ID != want[i].ID || !sameJSON(got[i].Meta, want[i].Meta) {
			return false
		}
	}
	return true
}

func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func TestWelcomeNamesEveryConnectionApart(t *testing.T) {
	ts := startChat(t)

	carol := dial(t, ts, "  carol  ")
	if carol.me.Name != "carol" || !strings.HasPrefix(carol.me.ID, "carol#") {
		t.Errorf("welcome %+v, want the trimmed name carol and an id carol#…", carol.me)
	}
	if anon := dial(t, ts, " \t "); anon.me.Name != "anon" || !strings.HasPrefix(anon.me.ID, "anon#") {
		t.Errorf("blank name: welcome %+v, want anon", anon.me)
	}
	long := strings.Repeat("é", 32) // 32 characters, 64 bytes
	if c := dial(t, ts, long); c.me.Name != long {
		t.Errorf("32-character name became %q", c.me.Name)
	}
	// Two people with one name are two members.
	ann1, ann2 := dial(t, ts, "ann"), dial(t, ts, "ann")
	if ann1.me.ID == ann2.me.ID {
		t.Errorf("two connections named ann share the id %q", ann1.me.ID)
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, wsURL(ts, long+"x"), nil)
	if err == nil {
		conn.CloseNow()
		t.Fatal("a 33-character name was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("33-character name: %v, want 401", err)
	}
}

func TestJoinWithMetaAndPresence(t *testing.T) {
	ts := startChat(t)
	alice, bob := dial(t, ts, "alice"), dial(t, ts, "bob")
	aliceMeta := json.RawMessage(`{"status":"here","client":"test"}`)
	bobMeta := json.RawMessage(`{"status":"away"}`)

	j := alice.join("lobby", aliceMeta)
	if want := []wireMember{{ID: alice.me.ID, Meta: aliceMeta}}; !sameMembers(j.Members, want) {
		t.Fatalf("alice sees members %+v, want %+v", j.Members, want)
	}
	if j.Seq != 0 {
		t.Fatalf("a new room's seq is %d, want 0", j.Seq)
	}

	j = bob.join("lobby", bobMeta)
	want := []wireMember{{ID: alice.me.ID, Meta: aliceMeta}, {ID: bob.me.ID, Meta: bobMeta}}
	if !sameMembers(j.Members, want) {
		t.Fatalf("bob sees members %+v, want %+v", j.Members, want)
	}
	alice.expectPresence(wirePresence{Room: "lobby", Joins: []wireMember{{ID: bob.me.ID, Meta: bobMeta}}})

	// A closed connection is a leave, announced with the same id and meta.
	bob.Close()
	alice.expectPresence(wirePresence{Room: "lobby", Leaves: []wireMember{{ID: bob.me.ID, Meta: bobMeta}}})

	carol := dial(t, ts, "carol")
	j = carol.join("lobby", nil)
	if want := []wireMember{{ID: alice.me.ID, Meta: aliceMeta}, {ID: carol.me.ID}}; !sameMembers(j.Members, want) {
		t.Fatalf("after bob dropped, carol sees %+v, want %+v", j.Members, want)
	}
}

func TestPublishReachesEveryMemberInSequence(t *testing.T) {
	ts := startChat(t)
	alice, bob, outsider := dial(t, ts, "alice"), dial(t, ts, "bob"), dial(t, ts, "eve")
	alice.join("lobby", nil)
	bob.join("lobby", nil)
	alice.expectPresence(wirePresence{Room: "lobby", Joins: []wireMember{{ID: bob.me.ID}}})
	outsider.join("elsewhere", nil)

	var pub wirePublished
	if err := alice.Request("room.publish", publication("lobby", "hello, bob"), &pub); err != nil || pub != (wirePublished{"lobby", 1}) {
		t.Fatalf("room.published %+v, %v; want seq 1", pub, err)
	}
	alice.expectMessage("lobby", 1, alice.me.ID, "hello, bob")
	bob.expectMessage("lobby", 1, alice.me.ID, "hello, bob")

	bob.publish("lobby", "hi alice")
	alice.expectMessage("lobby", 2, bob.me.ID, "hi alice")
	bob.expectMessage("lobby", 2, bob.me.ID, "hi alice")

	// The outsider's next message is its own: nothing from lobby came first.
	outsider.publish("elsewhere", "anyone?")
	outsider.expectMessage("elsewhere", 1, outsider.me.ID, "anyone?")

	// A page that joins later loads what was said from the history.
	carol := dial(t, ts, "carol")
	if j := carol.join("lobby", nil); j.Seq != 2 {
		t.Fatalf("carol joined at seq %d, want 2", j.Seq)
	}
	var h wireHistory
	if err := carol.Request("room.history", map[string]any{"room": "lobby", "limit": 100}, &h); err != nil {
		t.Fatalf("room.history: %v", err)
	}
	want := []wireMessage{
		{Room: "lobby", Seq: 1, From: alice.me.ID, Body: wireBody{"hello, bob"}},
		{Room: "lobby", Seq: 2, From: bob.me.ID, Body: wireBody{"hi alice"}},
	}
	if !reflect.DeepEqual(h.Messages, want) {
		t.Fatalf("history %+v, want %+v", h.Messages, want)
	}
}

// TestRejoinResumes checks what the page's reconnect relies on: a rejoin
// with the last seq seen gets exactly the missed messages and "recovered".
func TestRejoinResumes(t *testing.T) {
	ts := startChat(t)
	alice, bob := dial(t, ts, "alice"), dial(t, ts, "bob")
	alice.join("lobby", nil)
	alice.publish("lobby", "one")
	alice.expectMessage("lobby", 1, alice.me.ID, "one")
	if j := bob.join("lobby", nil); j.Seq != 1 {
		t.Fatalf("bob joined at seq %d, want 1", j.Seq)
	}
	alice.expectPresence(wirePresence{Room: "lobby", Joins: []wireMember{{ID: bob.me.ID}}})
	bob.Close()
	alice.expectPresence(wirePresence{Room: "lobby", Leaves: []wireMember{{ID: bob.me.ID}}})

	alice.publish("lobby", "two")
	alice.expectMessage("lobby", 2, alice.me.ID, "two")
	alice.publish("lobby", "three")
	alice.expectMessage("lobby", 3, alice.me.ID, "three")

	back := dial(t, ts, "bob")
	// Without an id: room.joined is the next message, and the missed
	// ones follow it.
	back.Send("room.join", map[string]any{"room": "lobby", "since": 1})
	var j wireJoined
	back.Expect("room.joined", &j)
	if !j.Recovered || j.Seq != 3 {
		t.Fatalf("rejoin since 1: %+v, want recovered at seq 3", j)
	}
	back.expectMessage("lobby", 2, alice.me.ID, "two")
	back.expectMessage("lobby", 3, alice.me.ID, "three")
	alice.publish("lobby", "four")
	back.expectMessage("lobby", 4, alice.me.ID, "four")
}

func TestTypingGoesToTheOthersOnly(t *testing.T) {
	ts := startChat(t)
	alice, bob, carol := dial(t, ts, "alice"), dial(t, ts, "bob"), dial(t, ts, "carol")
	alice.join("lobby", nil)
	bob.join("lobby", nil)
	alice.expectPresence(wirePresence{Room: "lobby", Joins: []wireMember{{ID: bob.me.ID}}})
	carol.join("elsewhere", nil)

	bob.Send("chat.typing", map[string]string{"room": "lobby"})
	var ty wireTyping
	alice.Expect("chat.typing", &ty)
	if want := (wireTyping{Room: "lobby", From: bob.me.ID, Name: "bob"}); ty != want {
		t.Fatalf("typing %+v, want %+v", ty, want)
	}

	// The room fanned the notice out before alice got it, and a message
	// from the room comes after it in every member's queue: had bob or
	// carol been sent the notice, they would read it first.
	alice.publish("lobby", "go on")
	bob.expectMessage("lobby", 1, alice.me.ID, "go on")
	carol.publish("elsewhere", "quiet")
	carol.expectMessage("elsewhere", 1, carol.me.ID, "quiet")
}

func TestInvalidTextIsRefused(t *testing.T) {
	ts := startChat(t)
	c := dial(t, ts, "alice")
	c.join("lobby", nil)

	for _, body := range []any{
		map[string]string{"text": ""},
		map[string]string{"text": " \n\t "},
		map[string]string{"text": strings.Repeat("x", 2001)},
		map[string]string{"text": "hi", "name": "mallory"},
		map[string]int{"text": 5},
		"just a string",
		map[string]string{},
	} {
		c.expectError("invalid", "room.publish", map[string]any{"room": "lobby", "body": body})
	}

	// The limit counts characters, not bytes: 2000 two-byte characters
	// pass, and they are the room's first message: nothing refused took a
	// sequence number.
	full := strings.Repeat("ü", 2000)
	c.publish("lobby", full)
	c.expectMessage("lobby", 1, c.me.ID, full)
}

func TestNotMember(t *testing.T) {
	ts := startChat(t)
	alice, bob := dial(t, ts, "alice"), dial(t, ts, "bob")
	alice.join("lobby", nil)

	bob.expectError("not_member", "room.publish", publication("lobby", "let me in"))
	bob.expectError("not_member", "chat.typing", map[string]string{"room": "lobby"})
	bob.expectError("not_member", "room.history", map[string]string{"room": "lobby"})

	// None of it reached the room: alice's next message is her own, and
	// the first of the room.
	alice.publish("lobby", "quiet here")
	alice.expectMessage("lobby", 1, alice.me.ID, "quiet here")
}

func TestPageAndClientAreServed(t *testing.T) {
	ts := startChat(t)
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html", `<script type="module" src="app.js"></script>`},
		{"/app.js", "javascript", `import { Client } from '/troupe.js';`},
		{"/troupe.js", "javascript", `export class Client`},
		{"/style.css", "text/css", `.messages`},
		{"/metrics", "text/plain", `troupe_connections_active`},
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
		// The page and its scripts load nothing from other origins.
		if tc.path != "/metrics" && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, resp.Header.Get("Content-Security-Policy"))
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
	go func() { done <- run(ctx, ln, troupe.Config{}) }()

	c := welcome(t, troupetest.Dial(t, "ws://"+ln.Addr().String()+"/ws?name=alice", nil))
	c.join("lobby", nil)
	// And a client on the HTTP fallback, whose event stream is a request
	// in progress that the HTTP server's shutdown must not wait on.
	resp, err := http.Get("http://" + ln.Addr().String() + "/ws?name=bob&sse=open")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("event stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	stream := bufio.NewReader(resp.Body)
	if line, err := stream.ReadString('\n'); line != "event: session\n" {
		t.Fatalf("stream began %q, %v", line, err)
	}

	cancel()
	if code, reason := c.ExpectClose(); code != 1001 {
		t.Fatalf("closed with %d %q after shutdown, want 1001", code, reason)
	}
	for {
		line, err := stream.ReadString('\n')
		if err != nil {
			t.Fatalf("the event stream ended without a close event: %v", err)
		}
		if line == "event: close\n" {
			if data, _ := stream.ReadString('\n'); !strings.Contains(data, `"code":1001`) {
				t.Fatalf("close event %q, want 1001", data)
			}
			break
		}
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
