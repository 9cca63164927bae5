package tests

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/backplane/memory"
	"github.com/troupehq/troupe/internal/session"
)

// The JavaScript client (clients/js/troupe.js) and plain clients of the npm
// package ws are tested by node --test against real Troupe servers started
// here. Node and node_modules/ws are requirements of the test suite, not
// options: a machine without them fails these tests, and scripts/test.sh
// installs both.

// nodeRunTimeout bounds one node --test run, so that a hung client fails
// the test instead of hanging it.
const nodeRunTimeout = 60 * time.Second

// smallHistory is the history size of the server on which resumes past
// the history window are tested.
const smallHistory = 5

// resyncHistory is the history size of the server on which resyncs are
// tested: it holds every message those tests publish.
const resyncHistory = 10000

// presenceLimit is the PresenceLimit of the server on which counted
// presence is tested.
const presenceLimit = 4

// maxTestDelay caps test.delay, so that no handler outlives its test.
const maxTestDelay = 5 * time.Second

// nodeSetupHint is what a failure to find the Node toolchain tells the
// reader to do.
const nodeSetupHint = "run scripts/test.sh, which installs Node.js and the npm packages (npm ci) before running the tests"

// repoRoot returns the repository root: the tests run in tests/.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// requireNode returns the node binary, failing the test if it or the ws
// package is missing.
func requireNode(t *testing.T, root string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (%v): %s", err, nodeSetupHint)
	}
	if _, err := os.Stat(filepath.Join(root, "node_modules", "ws", "package.json")); err != nil {
		t.Fatalf("the npm package ws is not installed in node_modules (%v): %s", err, nodeSetupHint)
	}
	return node
}

type nodeDelay struct {
	MS int `json:"ms"`
}

type nodeBurst struct {
	N int `json:"n"`
}

type nodeAsk struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// nodeAskResult is what test.ask reports back: the client's answer to the
// server's request, or the error it answered with.
type nodeAskResult struct {
	Payload json.RawMessage `json:"payload,omitempty"`
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
}

// nodeRoomLogic is the rooms' own logic for the Node tests: test.roomadd
// adds to a count the room keeps, and fails on request.
type nodeRoomLogic struct {
	troupe.NopRoomHandler
	count int
}

type nodeRoomAdd struct {
	N    int  `json:"n"`
	Fail bool `json:"fail"`
}

type nodeRoomSum struct {
	Count int    `json:"count"`
	From  string `json:"from"`
}

func (l *nodeRoomLogic) add(r *troupe.Room, from *troupe.Session, m nodeRoomAdd) (nodeRoomSum, error) {
	if m.Fail {
		return nodeRoomSum{}, troupe.NewError("refused", "asked to refuse")
	}
	l.count += m.N
	return nodeRoomSum{Count: l.count, From: r.MemberID(from)}, nil
}

// registerNodeHandlers installs the handlers the Node tests drive besides
// the room protocol: they let a test make the server slow, fail, drop the
// connection, send bursts, or ask the client a question.
func registerNodeHandlers(srv *troupe.Server, asks *sync.WaitGroup) {
	// test.roomcast broadcasts a custom event to a room's members:
	// {"type":<event>,"payload":{"room":<room>,"n":<n>}}.
	troupe.HandleRequest(srv, "test.roomcast", func(c *troupe.Context, m struct {
		Room  string `json:"room"`
		Event string `json:"event"`
		N     int    `json:"n"`
	}) (bool, error) {
		return true, c.Server().Broadcast(m.Room, m.Event, map[string]any{"room": m.Room, "n": m.N})
	})
	troupe.HandleRoom(srv, "test.roomadd", (*nodeRoomLogic).add)
	troupe.HandleRequest(srv, "test.echo", func(_ *troupe.Context, p json.RawMessage) (json.RawMessage, error) {
		return p, nil
	})
	// test.delay answers after a while; it holds the session's read loop,
	// which is what a slow handler does.
	troupe.HandleRequest(srv, "test.delay", func(c *troupe.Context, m nodeDelay) (nodeDelay, error) {
		d := min(time.Duration(m.MS)*time.Millisecond, maxTestDelay)
		select {
		case <-time.After(d):
		case <-c.Context().Done():
		}
		return m, nil
	})
	troupe.Handle(srv, "test.fail", func(*troupe.Context, json.RawMessage) error {
		return troupe.NewError("teapot", "refused on purpose")
	})
	// test.drop cuts the connection without a close handshake, the way a
	// crashed proxy or a lost network does.
	troupe.Handle(srv, "test.drop", func(c *troupe.Context, _ json.RawMessage) error {
		session.Drop(c.Session(), "dropped by test")
		return nil
	})
	// test.burst queues n envelopes at once; under the ndjson subprotocol
	// the session packs queued envelopes into shared frames.
	troupe.Handle(srv, "test.burst", func(c *troupe.Context, m nodeBurst) error {
		for i := range min(m.N, 10000) {
			if err := c.Session().Send("test.item", i); err != nil {
				return err
			}
		}
		return c.Reply("test.burst", m)
	})
	// test.pair sends two envelopes in one frame, as the ndjson
	// subprotocol does; without it a frame holds one envelope.
	troupe.Handle(srv, "test.pair", func(c *troupe.Context, _ json.RawMessage) error {
		if c.Session().Subprotocol() != "ndjson" {
			return troupe.NewError("bad_request", "test.pair needs the ndjson subprotocol")
		}
		return c.Session().SendText([]byte(`{"type":"test.first","payload":1}` + "\n" + `{"type":"test.second","payload":2}`))
	})
	// test.ask makes the server ask the client (Session.Request) and
	// report the answer as test.asked. The question waits on its own
	// goroutine: the answer arrives through this session's read loop.
	troupe.Handle(srv, "test.ask", func(c *troupe.Context, m nodeAsk) error {
		s := c.Session()
		asks.Add(1)
		go func() {
			defer asks.Done()
			ctx, cancel := context.WithTimeout(s.Context(), waitTimeout)
			defer cancel()
			var res nodeAskResult
			p, err := s.Request(ctx, m.Type, m.Payload)
			var re *session.ReplyError
			switch {
			case errors.As(err, &re):
				res.Code, res.Message = re.Code, re.Message
			case err != nil:
				res.Code, res.Message = "request_failed", err.Error()
			default:
				res.Payload = p
			}
			_ = s.Send("test.asked", res)
		}()
		return nil
	})
}

// startNodeServer starts a server with the room protocol on and the Node
// tests' handlers.
func startNodeServer(t *testing.T, cfg troupe.Config, opts ...serverOption) *testServer {
	t.Helper()
	cfg.RoomProtocol = true
	cfg.NewRoomHandler = func(string) troupe.RoomHandler { return &nodeRoomLogic{} }
	var asks sync.WaitGroup
	// Cleanups run last in, first out: this one runs after startServer's
	// has closed the server, and waits for questions still being asked.
	t.Cleanup(asks.Wait)
	h := startServer(t, cfg, opts...)
	registerNodeHandlers(h.srv, &asks)
	return h
}

// TestNode runs the JavaScript tests under clients/js/test with node
// --test, one Go subtest per file, against two servers: one with the
// default history and one that keeps only smallHistory messages per room.
// The files run in parallel; each uses rooms of its own.
func TestNode(t *testing.T) {
	root := repoRoot(t)
	node := requireNode(t, root)
	files, err := filepath.Glob(filepath.Join(root, "clients", "js", "test", "*.test.mjs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no JavaScript tests found under clients/js/test (%v)", err)
	}
	primary := startNodeServer(t, troupe.Config{})
	small := startNodeServer(t, troupe.Config{HistoryMessages: smallHistory})
	// Two nodes of one cluster (the in-process backplane), for clients
	// that move between nodes; test.node tells which one a client is on.
	cluster := memory.NewCluster(0)
	var nodeURLs []string
	for _, name := range []string{"node-a", "node-b"} {
		h := startNodeServer(t, troupe.Config{Backplane: cluster.Node(name)})
		troupe.HandleRequest(h.srv, "test.node", func(*troupe.Context, json.RawMessage) (string, error) { return name, nil })
		nodeURLs = append(nodeURLs, h.url)
	}
	// A server whose queues overflow soon, with small socket buffers and a
	// long history: its slow members are resynced.
	resync := startNodeServer(t, troupe.Config{
		HistoryMessages: resyncHistory,
		Settings:        troupe.Settings{MaxQueuedMessages: 128},
	}, smallSendBuffers())
	// A server that counts the members of rooms above presenceLimit.
	presence := startNodeServer(t, troupe.Config{PresenceLimit: presenceLimit})
	// The primary server behind a proxy that refuses WebSocket upgrades:
	// clients there fall back to SSE and POST.
	refusing := startRefusingProxy(t, primary.ts.URL)
	env := append(os.Environ(),
		"TROUPE_URL="+primary.url,
		"TROUPE_REFUSING_URL="+"ws"+strings.TrimPrefix(refusing.URL, "http"),
		"TROUPE_RESYNC_URL="+resync.url,
		"TROUPE_SMALL_HISTORY_URL="+small.url,
		"TROUPE_SMALL_HISTORY="+strconv.Itoa(smallHistory),
		"TROUPE_CLUSTER_URLS="+strings.Join(nodeURLs, ","),
		"TROUPE_COUNTED_URL="+presence.url,
		"TROUPE_COUNTED_LIMIT="+strconv.Itoa(presenceLimit),
	)
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".test.mjs")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runNode(t, node, root, env, file)
		})
	}
}

// runNode runs node --test on one file and fails the test with node's
// report if any JavaScript test failed.
func runNode(t *testing.T, node, root string, env []string, file string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nodeRunTimeout)
	defer cancel()
	rel, err := filepath.Rel(root, file)
	if err != nil {
		rel = file
	}
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", rel)
	cmd.Dir = root
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("node --test %s did not finish within %v:\n%s", rel, nodeRunTimeout, out)
	}
	if err != nil {
		t.Fatalf("node --test %s failed (%v):\n%s", rel, err, out)
	}
	t.Logf("node --test %s:\n%s", rel, out)
}
