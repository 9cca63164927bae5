package tests

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe"
)

// Effectively-once publish: a room.publish with a "mid" the room has seen
// is answered with the first message's seq and published no second time.

func onceConfig() troupe.Config {
	return troupe.Config{
		RoomProtocol: true,
		Authorize:    func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil },
	}
}

// publishMid publishes body with mid and returns the answer.
func (p *peer) publishMid(t *testing.T, room, mid string, body any) envelope {
	t.Helper()
	return p.request(t, "room.publish", map[string]any{"room": room, "body": body, "mid": mid})
}

// publishedSeq checks that e is room.published and returns its seq.
func publishedSeq(t *testing.T, what string, e envelope) uint64 {
	t.Helper()
	if e.Type != "room.published" {
		t.Fatalf("%s: answered %s %s", what, e.Type, e.Payload)
	}
	return decodePayload[publishedPayload](t, e).Seq
}

// bodies are the bodies of the messages p holds in room, in order.
func (p *peer) bodies(room string) []string {
	var out []string
	for _, m := range p.view(room).msgs {
		out = append(out, string(m.Body))
	}
	return out
}

// TestPublishOnceDuplicate checks that a publish repeated with the same mid,
// on the same connection or after a reconnect, is answered with the
// original seq and that members see the message once; that the mid is on
// room.message; and that the metric counts the duplicates.
func TestPublishOnceDuplicate(t *testing.T) {
	const room = "once"
	h, reg := metricsServer(t, onceConfig())
	ann := h.dialPeer(t, "ann", "ann")
	watcher := h.dialPeer(t, "watcher", "")
	ann.joinRoom(t, room, nil, nil)
	watcher.joinRoom(t, room, nil, nil)

	if seq := publishedSeq(t, "first", ann.publishMid(t, room, "m-1", "one")); seq != 1 {
		t.Fatalf("first publish: seq %d, want 1", seq)
	}
	if seq := publishedSeq(t, "again", ann.publishMid(t, room, "m-1", "one")); seq != 1 {
		t.Fatalf("the same mid again: seq %d, want the original 1", seq)
	}

	// After a reconnect (a new session), the same user's resend.
	ann.shutdown()
	ann2 := h.dialPeer(t, "ann2", "ann")
	ann2.joinRoom(t, room, nil, nil)
	if seq := publishedSeq(t, "after reconnect", ann2.publishMid(t, room, "m-1", "one")); seq != 1 {
		t.Fatalf("resend after a reconnect: seq %d, want the original 1", seq)
	}
	if seq := publishedSeq(t, "new mid", ann2.publishMid(t, room, "m-2", "two")); seq != 2 {
		t.Fatalf("a new mid: seq %d, want 2", seq)
	}
	watcher.waitSeq(t, room, 2)
	if got := watcher.bodies(room); strings.Join(got, ",") != `"one","two"` {
		t.Fatalf("the watcher holds %v, want each body once", got)
	}
	var first struct {
		Mid string `json:"mid"`
	}
	if err := json.Unmarshal(watcher.view(room).msgs[0].raw, &first); err != nil || first.Mid != "m-1" {
		t.Fatalf("room.message %s: mid %q, want m-1", watcher.view(room).msgs[0].raw, first.Mid)
	}
	eventuallyValue(t, reg, "troupe_publish_duplicates_total", 2)
	// The chat example's identities differ on every connection: a resend
	// under another identity is still the same message.
	ann3 := h.dialPeer(t, "ann3", "ann#2")
	ann3.joinRoom(t, room, nil, nil)
	if seq := publishedSeq(t, "under another identity", ann3.publishMid(t, room, "m-2", "two")); seq != 2 {
		t.Fatalf("resend under another identity: seq %d, want the original 2", seq)
	}
}

// TestPublishOnceBounds checks that a room forgets mids beyond
// DedupeMessages and after DedupeWindow (a resend is then published again)
// and that the metric counts both kinds of forgetting.
func TestPublishOnceBounds(t *testing.T) {
	const room = "bounds"
	cfg := onceConfig()
	cfg.DedupeMessages = 3
	cfg.DedupeWindow = 300 * time.Millisecond
	h, reg := metricsServer(t, cfg)
	p := h.dialPeer(t, "p", "p")
	p.joinRoom(t, room, nil, nil)
	for i, mid := range []string{"a", "b", "c", "d", "e"} {
		if seq := publishedSeq(t, mid, p.publishMid(t, room, mid, i)); seq != uint64(i+1) {
			t.Fatalf("publish %s: seq %d, want %d", mid, seq, i+1)
		}
	}
	// a and b are forgotten (count), e is remembered.
	if seq := publishedSeq(t, "e again", p.publishMid(t, room, "e", 4)); seq != 5 {
		t.Fatalf("e again: seq %d, want 5", seq)
	}
	if seq := publishedSeq(t, "a again", p.publishMid(t, room, "a", 0)); seq != 6 {
		t.Fatalf("a again, beyond DedupeMessages: seq %d, want 6 (published anew)", seq)
	}
	eventuallyValue(t, reg, `troupe_message_ids_evicted_total{reason="count"}`, 3)

	time.Sleep(400 * time.Millisecond) // past the window
	if seq := publishedSeq(t, "e after the window", p.publishMid(t, room, "e", 4)); seq != 7 {
		t.Fatalf("e after the window: seq %d, want 7 (published anew)", seq)
	}
	eventuallyValue(t, reg, `troupe_message_ids_evicted_total{reason="age"}`, 3)
}

// TestPublishOnceOff checks that a negative DedupeWindow turns the memory
// off: the same mid is published each time.
func TestPublishOnceOff(t *testing.T) {
	const room = "off"
	cfg := onceConfig()
	cfg.DedupeWindow = -1
	h := startServer(t, cfg)
	p := h.dialPeer(t, "p", "p")
	p.joinRoom(t, room, nil, nil)
	for want := uint64(1); want <= 2; want++ {
		if seq := publishedSeq(t, "publish", p.publishMid(t, room, "same", "x")); seq != want {
			t.Fatalf("seq %d, want %d", seq, want)
		}
	}
}

// TestPublishOnceMidTooLong checks that a mid over 64 bytes is refused with
// a clear error and publishes nothing.
func TestPublishOnceMidTooLong(t *testing.T) {
	const room = "long"
	h := startServer(t, onceConfig())
	p := h.dialPeer(t, "p", "p")
	p.joinRoom(t, room, nil, nil)
	e := p.publishMid(t, room, strings.Repeat("x", 65), "x")
	expectError(t, "a 65-byte mid", e, "invalid_payload")
	if msg := decodePayload[errorPayload](t, e).Message; !strings.Contains(msg, "mid") || !strings.Contains(msg, "64") {
		t.Errorf("error message %q does not say what is wrong", msg)
	}
	if seq := publishedSeq(t, "64-byte mid", p.publishMid(t, room, strings.Repeat("x", 64), "y")); seq != 1 {
		t.Fatalf("the next publish has seq %d, want 1: the refused one was published", seq)
	}
}

// TestClusterPublishOnce checks the same across nodes: a resend on another
// node, whose copy of the log has not yet received the first message, is
// answered with the first one's seq and published no second time.
func TestClusterPublishOnce(t *testing.T) {
	const room = "once"
	servers, c := startCluster(t, 2, 100)
	ann := servers[0].dialPeer(t, "ann", "ann")
	watcher := servers[1].dialPeer(t, "watcher", "w")
	ann.joinRoom(t, room, nil, nil)
	watcher.joinRoom(t, room, nil, nil)
	ann2 := servers[1].dialPeer(t, "ann2", "ann")
	ann2.joinRoom(t, room, nil, nil)

	c.DelayDeliveries("node-1", 300*time.Millisecond)
	first := ann.post(t, "room.publish", map[string]any{"room": room, "body": "one", "mid": "m-1"})
	if seq := publishedSeq(t, "first", ann.await(t, first)); seq != 1 {
		t.Fatalf("first publish: seq %d, want 1", seq)
	}
	// node-1 has not seen seq 1 yet: it must wait for it, not publish again.
	if seq := publishedSeq(t, "resend on node-1", ann2.publishMid(t, room, "m-1", "one")); seq != 1 {
		t.Fatalf("resend on another node: seq %d, want the original 1", seq)
	}
	c.DelayDeliveries("node-1", 0)
	if seq := publishedSeq(t, "next", ann2.publishMid(t, room, "m-2", "two")); seq != 2 {
		t.Fatalf("next publish: seq %d, want 2", seq)
	}
	watcher.waitSeq(t, room, 2)
	ann.waitSeq(t, room, 2)
	for _, p := range []*peer{watcher, ann} {
		if got := p.bodies(room); strings.Join(got, ",") != `"one","two"` {
			t.Fatalf("%s holds %v, want each body once", p.name, got)
		}
	}
}

// countingLogic is room logic that counts the publishes it sees.
type countingLogic struct {
	troupe.NopRoomHandler
	seen *atomic.Int32
}

func (l countingLogic) OnPublish(_ *troupe.Room, _ *troupe.Session, body json.RawMessage) (json.RawMessage, error) {
	l.seen.Add(1)
	return body, nil
}

// TestPublishOnceBeforeRoomLogic checks that a publish sent again is
// answered with the first seq before the room's logic sees it: the logic
// sees each message once.
func TestPublishOnceBeforeRoomLogic(t *testing.T) {
	const room = "logic"
	var seen atomic.Int32
	cfg := onceConfig()
	cfg.NewRoomHandler = func(string) troupe.RoomHandler { return countingLogic{seen: &seen} }
	h := startServer(t, cfg)
	p := h.dialPeer(t, "p", "p")
	p.joinRoom(t, room, nil, nil)
	for range 2 {
		if seq := publishedSeq(t, "publish", p.publishMid(t, room, "m-1", "x")); seq != 1 {
			t.Fatalf("seq %d, want 1", seq)
		}
	}
	if n := seen.Load(); n != 1 {
		t.Fatalf("the room's logic saw the message %d times, want once", n)
	}
}
