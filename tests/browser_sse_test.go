package tests

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/examples/chatserver"
)

// TestBrowserChatOverFallback is TestBrowserChat behind a proxy that
// refuses WebSocket upgrades: the pages fall back to Server-Sent Events and
// POST by themselves and chat the same. Bob's event stream is cut in the
// middle of the conversation and kept from coming back while alice
// writes: his page reopens it and shows every message once, in order. Then
// the server drops his session altogether: his page reconnects with a new
// one and its room resumes, saying it missed nothing.
func TestBrowserChatOverFallback(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v): run scripts/test.sh, which installs it (apt-get install -y chromium)", err)
	}
	handler, srv, err := chatserver.New(troupe.Config{})
	if err != nil {
		t.Fatalf("chatserver.New: %v", err)
	}
	ts := httptest.NewServer(handler)
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), browserWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	proxy := startRefusingProxy(t, ts.URL)
	alice, bob, _ := twoBrowserPages(t, chromium)

	live := converse(alice, bob, proxy.URL, "e2e-sse")
	if n := proxy.upgrades.Load(); n != 0 {
		t.Fatalf("%d WebSocket upgrades passed the refusing proxy", n)
	}
	if n := proxy.streams.Load(); n < 2 {
		t.Fatalf("%d event streams through the proxy, want the pages on the fallback", n)
	}

	// Bob's stream is cut and held off while alice writes.
	proxy.held.Store("bob")
	isBob := func(r *http.Request) bool { return r.URL.Query().Get("name") == "bob" }
	if n := proxy.cutWhere(isBob); n != 1 {
		t.Fatalf("cut %d streams of bob's, want 1", n)
	}
	for i, text := range []string{"are you there?", "you are missing this", "and this"} {
		alice.send(text)
		live = append(live, chatLine{4 + i, "alice", text})
		alice.waitFor("alice sees "+text, messagesAre(live))
	}
	proxy.held.Store("")
	bob.waitFor("bob's page shows every message once, in order", messagesAre(live))
	bob.send("back")
	live = append(live, chatLine{7, "bob", "back"})
	alice.waitFor("alice sees bob's message after his stream came back", messagesAre(live))

	// The server drops bob's session, and his page cannot get back until
	// alice has written more.
	proxy.held.Store("bob")
	dropBob(t, srv, alice, bob)
	for i, text := range []string{"gone again?", "you miss this too"} {
		alice.send(text)
		live = append(live, chatLine{8 + i, "alice", text})
		alice.waitFor("alice sees "+text, messagesAre(live))
	}
	proxy.held.Store("")
	st := bob.waitFor("bob's page recovers every message", func(st chatPage) bool {
		return st.Status == "recovered" && messagesAre(live)(st)
	})
	if !strings.Contains(st.StatusText, "recovered: missed nothing") {
		t.Errorf("bob's status says %q, want it to say it recovered and missed nothing", st.StatusText)
	}
	bob.waitFor("bob is back in the member list", func(st chatPage) bool {
		return st.CanSend && membersAre("alice", "bob")(st)
	})
	alice.send("welcome back")
	live = append(live, chatLine{10, "alice", "welcome back"})
	bob.waitFor("bob sees a new message", messagesAre(live))
	if n := proxy.upgrades.Load(); n != 0 {
		t.Fatalf("%d WebSocket upgrades passed the refusing proxy", n)
	}
	alice.checkNoExceptions()
	bob.checkNoExceptions()
}
