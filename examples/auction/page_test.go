package main

import (
	"context"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/troupehq/troupe"
)

// pageWait bounds every wait for a page; it only turns a hang into a
// failure.
const pageWait = 20 * time.Second

// view is what a person sees on the auction page, read from its DOM.
type view struct {
	High   string   `json:"high"`
	Leader string   `json:"leader"`
	Clock  string   `json:"clock"`
	Answer string   `json:"answer"`
	Bids   []string `json:"bids"`
	CanBid bool     `json:"canBid"`
	Error  string   `json:"error"`
}

const readView = `(() => {
  const $ = (id) => document.getElementById(id);
  return {
    high: $('high').textContent,
    leader: $('leader').textContent,
    clock: $('clock').textContent,
    answer: $('answer').textContent,
    bids: [...$('bids').children].map((li) => li.textContent),
    canBid: !$('auction').hidden && !$('bid').disabled,
    error: $('error').textContent,
  };
})()`

type page struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu         sync.Mutex
	exceptions []string
}

func openPage(t *testing.T, ctx context.Context, name, url, room string) *page {
	t.Helper()
	p := &page{t: t, name: name, ctx: ctx}
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			p.mu.Lock()
			p.exceptions = append(p.exceptions, e.ExceptionDetails.Text)
			p.mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("page %s: starting the browser: %v", name, err)
	}
	p.do("open and join "+room,
		chromedp.Navigate(url),
		chromedp.WaitEnabled(chromedp.ID("join")),
		chromedp.SetValue(chromedp.ID("name"), name),
		chromedp.SetValue(chromedp.ID("room"), room),
		chromedp.Click(chromedp.ID("join")),
	)
	return p
}

func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, pageWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("page %s: %s: %v", p.name, what, err)
	}
}

func (p *page) bid(amount string) {
	p.t.Helper()
	p.do("bid "+amount,
		chromedp.SetValue(chromedp.ID("amount"), amount),
		chromedp.Click(chromedp.ID("bid")),
	)
}

// waitFor polls the page until cond holds.
func (p *page) waitFor(what string, cond func(view) bool) {
	p.t.Helper()
	deadline := time.Now().Add(pageWait)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, pageWait)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[view](readView))
		cancel()
		if err == nil && cond(v) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("page %s: timed out waiting until %s; it shows %+v (read error: %v)", p.name, what, v, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (p *page) checkNoExceptions() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.exceptions) > 0 {
		p.t.Errorf("page %s threw: %s", p.name, strings.Join(p.exceptions, "; "))
	}
}

// serve serves the auction with the given length and returns its URL.
func serve(t *testing.T, length time.Duration) string {
	t.Helper()
	handler, srv, err := newAuction(troupe.Config{}, length)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(handler)
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), pageWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return ts.URL + "/"
}

// TestPage drives the page in headless Chromium: two people bid, each sees
// the answer to their own bid and the accepted bids of both in one order,
// a late joiner sees the state and the bids so far, and an auction's page
// shows its end. It needs Debian's chromium package (scripts/test.sh
// installs it).
func TestPage(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v): run scripts/test.sh, which installs it", err)
	}
	url := serve(t, time.Minute)
	short := serve(t, time.Second)

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	annCtx, cancelAnn := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancelAnn(); cancelAlloc() })
	tab := func() context.Context {
		ctx, cancel := chromedp.NewContext(annCtx, chromedp.WithNewBrowserContext())
		t.Cleanup(cancel)
		return ctx
	}

	ann := openPage(t, annCtx, "ann", url, "lamp")
	ann.waitFor("ann is in the auction", func(v view) bool { return v.CanBid && v.High == "none" })
	bob := openPage(t, tab(), "bob", url, "lamp")
	bob.waitFor("bob is in the auction", func(v view) bool { return v.CanBid })

	ann.bid("10")
	ann.waitFor("ann's bid is accepted", func(v view) bool { return v.Answer == "Accepted: 10" })
	bob.bid("5")
	bob.waitFor("bob's low bid is rejected", func(v view) bool { return strings.HasPrefix(v.Answer, "Rejected") })
	bob.bid("12")
	both := []string{"ann: 10", "bob: 12"}
	for _, p := range []*page{ann, bob} {
		p.waitFor("both bids, in order", func(v view) bool {
			return reflect.DeepEqual(v.Bids, both) && v.High == "12" && v.Leader == "by bob"
		})
	}

	cat := openPage(t, tab(), "cat", url, "lamp")
	cat.waitFor("the late joiner sees the state and the bids", func(v view) bool {
		return reflect.DeepEqual(v.Bids, both) && v.High == "12" && v.Leader == "by bob"
	})

	dan := openPage(t, tab(), "dan", short, "vase")
	dan.waitFor("the short auction ends", func(v view) bool { return v.Clock == "Ended without bids" && !v.CanBid })

	for _, p := range []*page{ann, bob, cat, dan} {
		p.checkNoExceptions()
	}
}
