package serve

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/internal/session"
)

// A message of exactly MaxMessageSize bytes is accepted, whole or in
// fragments; one byte more gets close 1009 (a close frame, not a reset),
// and OnClose reports 1009. With and without the idle-read machinery.
func TestMessageSizeLimit(t *testing.T) {
	const limit = 1000
	for _, mode := range []string{"adopted", "fallback"} {
		t.Run(mode, func(t *testing.T) {
			var mu sync.Mutex
			closes := map[string]int{} // by the client's first message
			first := map[*session.Session]string{}
			closed := make(chan struct{}, 16)
			addr, _ := serve(t, mode, Config{Limits: Limits{MaxMessageSize: limit}}, Hooks{
				OnFrame: func(s *session.Session, binary bool, data []byte) {
					mu.Lock()
					if _, ok := first[s]; !ok {
						first[s] = string(data[:min(len(data), 8)])
					}
					mu.Unlock()
					_ = s.SendText(fmt.Appendf(nil, "ok%d", len(data)%10))
				},
				OnClose: func(s *session.Session, code int, _ string) {
					mu.Lock()
					closes[first[s]] = code
					mu.Unlock()
					closed <- struct{}{}
				},
			})
			closeOf := func(name string) int {
				t.Helper()
				deadline := time.After(10 * time.Second)
				for {
					mu.Lock()
					code, ok := closes[name]
					mu.Unlock()
					if ok {
						return code
					}
					select {
					case <-closed:
					case <-deadline:
						t.Fatalf("%s: no OnClose", name)
					}
				}
			}
			msg := func(name string, size int) []byte {
				return []byte(name + strings.Repeat("x", size-len(name)))
			}

			t.Run("whole", func(t *testing.T) {
				c := dialEcho(t, addr)
				write(t, c.ws, websocket.MessageText, msg("whole---", limit))
				expectEcho(t, c.got, "ok0")
				write(t, c.ws, websocket.MessageText, msg("whole---", limit+1))
				if m, ok := <-c.got; ok {
					t.Errorf("got %q after the message over the limit", m)
				}
				if websocket.CloseStatus(c.err) != websocket.StatusMessageTooBig {
					t.Errorf("client read %v, want close 1009", c.err)
				}
				if code := closeOf("whole---"); code != session.CloseMessageTooBig {
					t.Errorf("OnClose %d, want %d", code, session.CloseMessageTooBig)
				}
			})
			t.Run("fragments", func(t *testing.T) {
				c := dialRaw(t, addr, nil)
				m := msg("fragment", limit)
				c.write(t, bytes.Join([][]byte{maskedFrame(0x01, m[:600]), maskedFrame(0x80, m[600:])}, nil))
				c.expect(t, "ok0")
				m = msg("fragment", limit+1)
				c.write(t, bytes.Join([][]byte{maskedFrame(0x01, m[:600]), maskedFrame(0x00, m[600:]), maskedFrame(0x80, []byte("more"))}, nil))
				if m, ok := <-c.got; ok {
					t.Errorf("got %q after the message over the limit", m)
				}
				<-c.done
				if len(c.close) < 2 || binary.BigEndian.Uint16(c.close) != uint16(websocket.StatusMessageTooBig) {
					t.Errorf("close frame %q, want 1009", c.close)
				}
				if code := closeOf("fragment"); code != session.CloseMessageTooBig {
					t.Errorf("OnClose %d, want %d", code, session.CloseMessageTooBig)
				}
			})
		})
	}
}

// Messages of every size around the read buffer's (scratchSize), whole
// and in fragments that cross it, arrive intact, in order, each its own
// copy (a handler may keep what it was given), up to MaxMessageSize.
func TestMessageSizesArriveIntact(t *testing.T) {
	const limit = 4 * scratchSize
	var mu sync.Mutex
	var kept [][]byte
	addr, _ := serve(t, "adopted", Config{Limits: Limits{MaxMessageSize: limit}}, Hooks{
		OnFrame: func(s *session.Session, binary bool, data []byte) {
			mu.Lock()
			kept = append(kept, data)
			mu.Unlock()
			_ = s.SendText(data)
		},
	})
	sizes := []int{0, 1, scratchSize - 1, scratchSize, scratchSize + 1, 2*scratchSize + 7, limit}
	msg := func(size int) []byte {
		b := make([]byte, size)
		for i := range b {
			b[i] = 'a' + byte((i*7+size)%26)
		}
		return b
	}
	c := dialEcho(t, addr)
	var want []string
	for _, n := range sizes {
		write(t, c.ws, websocket.MessageText, msg(n))
		want = append(want, string(msg(n)))
	}
	expectEcho(t, c.got, want...)

	r := dialRaw(t, addr, nil)
	m := msg(scratchSize + 100)
	r.write(t, bytes.Join([][]byte{maskedFrame(0x01, m[:scratchSize-10]), maskedFrame(0x80, m[scratchSize-10:])}, nil))
	r.expect(t, string(m))

	mu.Lock()
	defer mu.Unlock()
	for i, n := range sizes {
		if got := string(kept[i]); got != want[i] {
			t.Errorf("message %d (%d bytes) as kept: %.40q, want %.40q", i, n, got, want[i])
		}
	}
}
