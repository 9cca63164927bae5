package tests

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/examples/chatserver"
	"github.com/troupehq/troupe/internal/session"
)

// browserWait bounds every wait for a page. Starting Chromium and loading a
// page is slower than a WebSocket round trip, hence more than waitTimeout;
// it only turns a hang into a failure.
const browserWait = 20 * time.Second

// chatPage is what a person sees on the chat page, read from its DOM.
type chatPage struct {
	Status     string     `json:"status"` // the status badge's data-state
	StatusText string     `json:"statusText"`
	Members    []string   `json:"members"`
	Messages   []chatLine `json:"messages"`
	Typing     string     `json:"typing"`
	Error      string     `json:"error"`
	CanSend    bool       `json:"canSend"`
}

// chatLine is one message of the page's list.
type chatLine struct {
	Seq  int    `json:"seq"`
	From string `json:"from"`
	Text string `json:"text"`
}

const readChatPage = `(() => {
  const $ = (id) => document.getElementById(id);
  return {
    status: $('status').dataset.state,
    statusText: $('status').textContent,
    members: [...$('members').children].map((li) => li.firstChild.textContent),
    messages: [...$('messages').querySelectorAll('li.msg')].map((li) => ({
      seq: Number(li.dataset.seq),
      from: li.querySelector('.from').textContent,
      text: li.querySelector('.text').textContent,
    })),
    typing: $('typing').textContent,
    error: $('error').textContent,
    canSend: !$('send').disabled,
  };
})()`

// browserPage is one tab of the browser, with the uncaught JavaScript
// exceptions it threw.
type browserPage struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu         sync.Mutex
	exceptions []string
}

func newBrowserPage(t *testing.T, name string, ctx context.Context) *browserPage {
	t.Helper()
	p := &browserPage{t: t, name: name, ctx: ctx}
	// Listen also starts the browser and opens the tab: with the tab's own
	// context, which has no timeout, so that the browser lives as long as
	// the test.
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			text := e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil && e.ExceptionDetails.Exception.Description != "" {
				text += " " + e.ExceptionDetails.Exception.Description
			}
			p.mu.Lock()
			p.exceptions = append(p.exceptions, text)
			p.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("page %s: starting the browser: %v", name, err)
	}
	return p
}

// do runs actions on the page, bounded by browserWait.
func (p *browserPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("page %s: %s: %v (page shows %+v)", p.name, what, err, p.read())
	}
}

func (p *browserPage) read() chatPage {
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	st, _ := chromedp.Run(ctx, chromedp.Evaluate[chatPage](readChatPage))
	return st
}

// waitFor polls the page until cond holds, and fails the test with what the
// page showed last if it does not within browserWait.
func (p *browserPage) waitFor(what string, cond func(chatPage) bool) chatPage {
	p.t.Helper()
	deadline := time.Now().Add(browserWait)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, browserWait)
		st, err := chromedp.Run(ctx, chromedp.Evaluate[chatPage](readChatPage))
		cancel()
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("page %s: timed out waiting until %s; it shows %+v (read error: %v)", p.name, what, st, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (p *browserPage) join(name, room string) {
	p.t.Helper()
	p.do("join "+room+" as "+name,
		chromedp.WaitEnabled(chromedp.ID("join")),
		chromedp.SetValue(chromedp.ID("name"), name),
		chromedp.SetValue(chromedp.ID("room"), room),
		chromedp.Click(chromedp.ID("join")),
	)
}

func (p *browserPage) send(text string) {
	p.t.Helper()
	p.do("send "+text,
		chromedp.WaitEnabled(chromedp.ID("text")),
		chromedp.SendKeys(chromedp.ID("text"), text),
		chromedp.Click(chromedp.ID("send")),
	)
}

func (p *browserPage) checkNoExceptions() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.exceptions) > 0 {
		p.t.Errorf("page %s threw: %s", p.name, strings.Join(p.exceptions, "; "))
	}
}

func membersAre(names ...string) func(chatPage) bool {
	return func(st chatPage) bool {
		got := slices.Clone(st.Members)
		slices.Sort(got)
		want := slices.Clone(names)
		slices.Sort(want)
		return slices.Equal(got, want)
	}
}

func messagesAre(want []chatLine) func(chatPage) bool {
	return func(st chatPage) bool { return reflect.DeepEqual(st.Messages, want) }
}

// TestBrowserChat drives the chat example's page in headless Chromium: two
// people in one room see each other's messages and each other in the member
// list, and a page whose connection the server drops comes back by itself
// and shows every message exactly once, in order, saying it missed nothing.
//
// It needs Debian's chromium package, which scripts/test.sh installs. Set
// CHAT_SCREENSHOT to a file name to keep a screenshot of the page at the end.
func TestBrowserChat(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v): run scripts/test.sh, which installs it (apt-get install -y chromium)", err)
	}

	handler, srv, err := chatserver.New(troupe.Config{})
	if err != nil {
		t.Fatalf("chatserver.New: %v", err)
	}
	// The test holds bob's page off while alice writes, so that what he
	// gets back is a resume, not just live messages: his reconnects are
	// refused as an unreachable server would refuse them.
	var holdBob atomic.Bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" && r.URL.Query().Get("name") == "bob" && holdBob.Load() {
			http.Error(w, "held back by the test", http.StatusServiceUnavailable)
			return
		}
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		// Troupe first: httptest.Server.Close does not wait for
		// connections that were upgraded to WebSockets.
		ctx, cancel := context.WithTimeout(context.Background(), browserWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})

	alice, bob, bobCtx := twoBrowserPages(t, chromium)

	live := converse(alice, bob, ts.URL, "e2e")

	// The server drops bob's connection, without a close handshake, and
	// his page cannot get back until alice has written more.
	holdBob.Store(true)
	dropBob(t, srv, alice, bob)
	for i, text := range []string{"are you there?", "you are missing this", "and this"} {
		alice.send(text)
		live = append(live, chatLine{4 + i, "alice", text})
		alice.waitFor("alice sees "+text, messagesAre(live))
	}
	holdBob.Store(false)

	st := bob.waitFor("bob's page recovers every message", func(st chatPage) bool {
		return st.Status == "recovered" && messagesAre(live)(st)
	})
	if !strings.Contains(st.StatusText, "recovered: missed nothing") {
		t.Errorf("bob's status says %q, want it to say it recovered and missed nothing", st.StatusText)
	}
	bob.waitFor("bob is back in the member list", func(st chatPage) bool {
		return st.CanSend && membersAre("alice", "bob")(st)
	})
	alice.waitFor("alice sees bob back", membersAre("alice", "bob"))

	// And the resumed page is live again.
	alice.send("welcome back")
	live = append(live, chatLine{7, "alice", "welcome back"})
	bob.waitFor("bob sees a new message", messagesAre(live))

	if file := os.Getenv("CHAT_SCREENSHOT"); file != "" {
		ctx, cancel := context.WithTimeout(bobCtx, browserWait)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		cancel()
		if err != nil {
			t.Errorf("screenshot: %v", err)
		} else if err := os.WriteFile(file, png, 0o644); err != nil {
			t.Errorf("screenshot: %v", err)
		}
	}
	alice.checkNoExceptions()
	bob.checkNoExceptions()
}

// dropBob drops bob's session on the server, without a close handshake,
// and waits until his page says it is reconnecting and alice sees him
// leave.
func dropBob(t *testing.T, srv *troupe.Server, alice, bob *browserPage) {
	t.Helper()
	var bobs []*troupe.Session
	for _, s := range srv.Sessions() {
		if strings.HasPrefix(s.Identity(), "bob#") {
			bobs = append(bobs, s)
		}
	}
	if len(bobs) != 1 {
		t.Fatalf("found %d sessions of bob, want 1", len(bobs))
	}
	session.Drop(bobs[0], "shutdown")
	bob.waitFor("bob's page says it is reconnecting", func(st chatPage) bool {
		return st.Status == "reconnecting" && strings.Contains(st.StatusText, "reconnecting") && !st.CanSend
	})
	alice.waitFor("alice sees bob leave", membersAre("alice"))
}

// converse has alice and bob open the chat page at base, join room and
// talk: history for a late joiner, members, messages both ways, typing. It
// returns the conversation as both pages show it.
func converse(alice, bob *browserPage, base, room string) []chatLine {
	alice.do("open the page", chromedp.Navigate(base+"/"))
	alice.join("alice", room)
	alice.waitFor("alice is in the room", func(st chatPage) bool {
		return st.CanSend && membersAre("alice")(st) && st.Status == "open"
	})
	// Said before bob came: his page shows it from the room's history.
	alice.send("before you came")
	early := []chatLine{{1, "alice", "before you came"}}
	alice.waitFor("alice sees her first message", messagesAre(early))

	bob.do("open the page", chromedp.Navigate(base+"/"))
	bob.join("bob", room)
	bob.waitFor("bob is in the room and sees the history", func(st chatPage) bool {
		return st.CanSend && membersAre("alice", "bob")(st) && messagesAre(early)(st)
	})
	alice.waitFor("alice sees bob in the member list", membersAre("alice", "bob"))

	alice.send("hello bob")
	live := append(slices.Clone(early), chatLine{2, "alice", "hello bob"})
	bob.waitFor("bob sees alice's message", messagesAre(live))
	alice.waitFor("alice sees her message", messagesAre(live))

	// Typing shows on the other page.
	bob.do("type", chromedp.WaitEnabled(chromedp.ID("text")), chromedp.SendKeys(chromedp.ID("text"), "hi al"))
	alice.waitFor("alice sees bob typing", func(st chatPage) bool { return st.Typing == "bob is typing…" })
	bob.do("finish and send", chromedp.SendKeys(chromedp.ID("text"), "ice"), chromedp.Click(chromedp.ID("send")))
	live = append(live, chatLine{3, "bob", "hi alice"})
	alice.waitFor("alice sees bob's message and no longer his typing", func(st chatPage) bool {
		return messagesAre(live)(st) && st.Typing == ""
	})
	return live
}

// twoBrowserPages starts headless Chromium with two pages, alice's and
// bob's, each in a browser context of its own (its own storage and
// connections, like another person's browser); they end with the test.
func twoBrowserPages(t *testing.T, chromium string) (alice, bob *browserPage, bobCtx context.Context) {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox, // containers and root: no user namespaces for the sandbox
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// /dev/shm is small in many containers; Chromium crashes when
		// it fills up.
		chromedp.Flag("disable-dev-shm-usage", true),
		// Two pages run at once and neither may be slowed down for not
		// being in front: the client's reconnect and heartbeat timers
		// must fire on time.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 640),
	)
	// The first context owns the browser; the second is a new browser
	// context in it (its own storage and connections, like another
	// person's browser).
	aliceCtx, cancelAlice := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		// In reverse order of creation, each waiting until what it
		// started is gone: the tab, the browser, the browser process.
		cancelAlice()
		cancelAlloc()
	})
	alice = newBrowserPage(t, "alice", aliceCtx)
	bobCtx, cancelBob := chromedp.NewContext(aliceCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancelBob) // runs before the browser is closed
	bob = newBrowserPage(t, "bob", bobCtx)

	return alice, bob, bobCtx
}
