package serve

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

// closeRecorder serves a handler that echoes every message and records, per
// session, what OnFrame saw, how many echoes were refused, and OnClose's
// code.
type closeRecorder struct {
	addr string
	h    *Handler

	mu      sync.Mutex
	seen    []string // every message, all sessions (one per test case)
	refused int
	code    int
	closed  chan struct{}
}

func newCloseRecorder(t *testing.T, mode string) *closeRecorder {
	r := &closeRecorder{closed: make(chan struct{}, 1)}
	r.addr, r.h = serve(t, mode, Config{Limits: Limits{PingInterval: -1}}, Hooks{
		OnFrame: func(s *session.Session, _ bool, data []byte) {
			// A little work, so that the messages read in one go are
			// still waiting for their handlers when the close is read.
			time.Sleep(2 * time.Millisecond)
			err := s.SendText(data)
			r.mu.Lock()
			r.seen = append(r.seen, string(data))
			if err != nil {
				r.refused++
			}
			r.mu.Unlock()
		},
		OnClose: func(s *session.Session, code int, _ string) {
			r.mu.Lock()
			r.code = code
			r.mu.Unlock()
			r.closed <- struct{}{}
		},
	})
	return r
}

// result waits for OnClose and returns what the handler saw.
func (r *closeRecorder) result(t *testing.T) (seen []string, refused, code int) {
	t.Helper()
	select {
	case <-r.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen), r.refused, r.code
}

// received reads what the client got until the server's close frame, and
// the close frame's code (0 if none came).
func received(t *testing.T, c *rawClient) (got []string, code int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-c.got:
			if !ok {
				<-c.done
				if len(c.close) >= 2 {
					code = int(binary.BigEndian.Uint16(c.close))
				}
				return got, code
			}
			got = append(got, m)
		case <-timeout:
			t.Fatal("the connection did not end")
		}
	}
}

func closeFrame(code int, reason string) []byte {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return maskedFrame(0x88, append(p, reason...))
}

func texts(prefix string, n int) (msgs []string, frames []byte) {
	for i := range n {
		m := fmt.Sprintf("%s%d", prefix, i)
		msgs = append(msgs, m)
		frames = append(frames, maskedFrame(0x81, []byte(m))...)
	}
	return msgs, frames
}

// frameB0 is a masked frame with first byte b0 (final bit, reserved bits
// and opcode as given).
func frameB0(b0 byte, payload string) []byte { return maskedFrame(b0, []byte(payload)) }

// What a client sends in the same TCP write as its close frame, or as a
// frame that breaks the protocol, reaches its handlers, and their replies
// are written before the server's close frame.
func TestRepliesBeforeTheClientsClose(t *testing.T) {
	one, oneFrames := texts("m", 1)
	ten, tenFrames := texts("m", 10)
	cases := []struct {
		name  string
		write []byte
		want  []string // what the handler sees, and the client gets back
		code  int      // the server's close frame, and OnClose
	}{
		{"a message and the close", slices.Concat(oneFrames, closeFrame(1000, "bye")), one, 1000},
		{"ten messages and the close", slices.Concat(tenFrames, closeFrame(1001, "tab closed")), ten, 1001},
		{"a message and a frame with a reserved bit", slices.Concat(oneFrames, frameB0(0xc1, "rsv1")), one, session.CloseProtocolError},
		{"a fragmented message, then a text frame where a continuation belongs",
			bytes.Join([][]byte{frameB0(0x01, "ab"), frameB0(0x80, "cd"), frameB0(0x01, "x"), frameB0(0x81, "y")}, nil),
			[]string{"abcd"}, session.CloseProtocolError},
		{"ten messages and an unmasked frame", slices.Concat(tenFrames, []byte{0x81, 0x01, 'u'}), ten, session.CloseProtocolError},
		{"ten messages and a close without a code", slices.Concat(tenFrames, maskedFrame(0x88, nil)), ten, session.CloseNoStatus},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newCloseRecorder(t, "adopted")
			c := dialRaw(t, r.addr, nil)
			c.write(t, tc.write)
			got, code := received(t, c)
			seen, refused, onClose := r.result(t)
			if !slices.Equal(seen, tc.want) {
				t.Errorf("the handler saw %q, want %q", seen, tc.want)
			}
			if refused != 0 {
				t.Errorf("%d replies refused", refused)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("the client got %q, want %q", got, tc.want)
			}
			wantWire := tc.code
			if wantWire == session.CloseNoStatus {
				wantWire = 0 // an empty close frame
			}
			if code != wantWire || onClose != tc.code {
				t.Errorf("close frame %d, OnClose %d; want %d, %d", code, onClose, wantWire, tc.code)
			}
			if n := r.h.Stats().UnsentAtClose.Load(); n != 0 {
				t.Errorf("UnsentAtClose %d", n)
			}
		})
	}

	// The same bytes in separate writes, the close well after: the same.
	t.Run("messages, then the close", func(t *testing.T) {
		r := newCloseRecorder(t, "adopted")
		c := dialRaw(t, r.addr, nil)
		c.write(t, tenFrames)
		time.Sleep(50 * time.Millisecond)
		c.write(t, closeFrame(1000, ""))
		got, code := received(t, c)
		seen, _, _ := r.result(t)
		if !slices.Equal(seen, ten) || !slices.Equal(got, ten) || code != 1000 {
			t.Errorf("saw %q, got %q, close %d", seen, got, code)
		}
	})
}

// Where coder/websocket is not known to read through the frame reader
// (fallback), nothing can be held back: it answers the close at once. Every
// message still reaches its handler, and each reply is either written,
// refused (the handler is told), or counted in UnsentAtClose.
func TestRepliesBeforeTheClientsCloseInFallback(t *testing.T) {
	ten, tenFrames := texts("m", 10)
	r := newCloseRecorder(t, "fallback")
	c := dialRaw(t, r.addr, nil)
	c.write(t, slices.Concat(tenFrames, closeFrame(1000, "bye")))
	got, _ := received(t, c)
	seen, refused, _ := r.result(t)
	if !slices.Equal(seen, ten) {
		t.Errorf("the handler saw %q, want %q", seen, ten)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		unsent := int(r.h.Stats().UnsentAtClose.Load())
		if len(got)+refused+unsent == len(ten) {
			t.Logf("written %d, refused %d, unsent %d", len(got), refused, unsent)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("written %d, refused %d, unsent %d: %d replies unaccounted for", len(got), refused, unsent, len(ten)-len(got)-refused-unsent)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
