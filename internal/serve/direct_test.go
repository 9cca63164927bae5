package serve

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

func TestWholeFrameTakesOnlyWholeFinalDataFrames(t *testing.T) {
	text := maskedFrame(0x81, []byte("hello"))
	mid := maskedFrame(0x81, bytes.Repeat([]byte("x"), 300)) // 16-bit length
	cases := []struct {
		name  string
		b     []byte
		max   int64
		hl    int
		n     int64
		bin   bool
		taken bool
	}{
		{"text", text, 100, 6, 5, false, true},
		{"binary", maskedFrame(0x82, []byte("hi")), 100, 6, 2, true, true},
		{"empty", maskedFrame(0x81, nil), 100, 6, 0, false, true},
		{"followed by more", append(append([]byte{}, text...), text...), 100, 6, 5, false, true},
		{"16-bit length", mid, 1000, 8, 300, false, true},
		{"at the limit", text, 5, 6, 5, false, true},
		{"over the limit", text, 4, 0, 0, false, false},
		{"cut in the payload", text[:len(text)-1], 100, 0, 0, false, false},
		{"cut in the header", mid[:5], 1000, 0, 0, false, false},
		{"not final", maskedFrame(0x01, []byte("part")), 100, 0, 0, false, false},
		{"continuation", maskedFrame(0x80, []byte("rest")), 100, 0, 0, false, false},
		{"reserved bit", maskedFrame(0xc1, []byte("z")), 100, 0, 0, false, false},
		{"ping", maskedFrame(0x89, []byte("p")), 100, 0, 0, false, false},
		{"close", maskedFrame(0x88, []byte{3, 232}), 100, 0, 0, false, false},
		{"unmasked", []byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}, 100, 0, 0, false, false},
	}
	for _, c := range cases {
		hl, n, bin, ok := wholeFrame(c.b, c.max)
		if ok != c.taken || ok && (hl != c.hl || n != c.n || bin != c.bin) {
			t.Errorf("%s: got (%d, %d, %v, %v), want (%d, %d, %v, %v)", c.name, hl, n, bin, ok, c.hl, c.n, c.bin, c.taken)
		}
	}
}

func TestUnmaskIntoMatchesTheRFC(t *testing.T) {
	key := [4]byte{0x1f, 0x82, 0x6b, 0xd4}
	for n := range 70 {
		src := make([]byte, n)
		want := make([]byte, n)
		for i := range src {
			src[i] = byte(i*7 + 3)
			want[i] = src[i] ^ key[i%4] // RFC 6455 5.3
		}
		got := make([]byte, n)
		unmaskInto(got, src, binary.LittleEndian.Uint32(key[:]))
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: %x, want %x", n, got, want)
		}
	}
}

// TestDirectReadingKeepsEveryMessage sends, in single TCP writes, data
// frames that direct reading takes mixed with everything it must leave to
// coder/websocket (fragmented messages, pings, frames cut by the end of a
// write or of the read buffer), and expects every message back whole, in
// order and with its type, in every mode.
func TestDirectReadingKeepsEveryMessage(t *testing.T) {
	for _, mode := range []string{"adopted", "fallback", "not adopted"} {
		t.Run(mode, func(t *testing.T) {
			addr, _ := serve(t, mode, Config{Limits: Limits{PingInterval: -1, MaxMessageSize: 1 << 16}}, Hooks{
				OnFrame: func(s *session.Session, bin bool, data []byte) {
					kind := "t:"
					if bin {
						kind = "b:"
					}
					_ = session.SendFrame(s, session.Frame{Data: append([]byte(kind), data...)})
				},
			})
			c := dialRaw(t, addr, nil)
			n := 0
			for round := range 8 {
				var out [][]byte
				var want []string
				for i := range 60 {
					m := fmt.Sprintf("%d:", n) + strings.Repeat("m", (round*60+i*37)%400)
					n++
					switch i % 9 {
					case 1:
						out = append(out, maskedFrame(0x82, []byte(m)))
						want = append(want, "b:"+m)
					case 4: // in three fragments
						a, b := len(m)/3, 2*len(m)/3
						out = append(out, maskedFrame(0x01, []byte(m[:a])), maskedFrame(0x00, []byte(m[a:b])))
						out = append(out, maskedFrame(0x89, []byte("ping inside")), maskedFrame(0x80, []byte(m[b:])))
						want = append(want, "t:"+m)
					case 7:
						out = append(out, maskedFrame(0x8a, []byte("unasked pong")), maskedFrame(0x81, []byte(m)))
						want = append(want, "t:"+m)
					default:
						out = append(out, maskedFrame(0x81, []byte(m)))
						want = append(want, "t:"+m)
					}
				}
				all := bytes.Join(out, nil)
				if round%2 == 1 {
					// Cut inside a frame: the rest comes in a second write.
					cut := len(all)/2 + 3
					c.write(t, all[:cut])
					time.Sleep(5 * time.Millisecond)
					all = all[cut:]
				}
				c.write(t, all)
				c.expect(t, want...)
			}
		})
	}
}
