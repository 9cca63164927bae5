package serve

import "testing"

func TestControlPrefix(t *testing.T) {
	masked := func(b0 byte, n int) []byte {
		f := []byte{b0, 0x80 | byte(n), 1, 2, 3, 4}
		return append(f, make([]byte, n)...)
	}
	pong, ping, closeF := masked(0x8a, 3), masked(0x89, 0), masked(0x88, 2)
	text, partText := masked(0x81, 5), masked(0x01, 5)
	cat := func(fs ...[]byte) []byte {
		var out []byte
		for _, f := range fs {
			out = append(out, f...)
		}
		return out
	}
	unmasked := []byte{0x8a, 0x00}
	for _, c := range []struct {
		name string
		in   []byte
		want int
	}{
		{"nothing", nil, 0},
		{"a pong", pong, len(pong)},
		{"pong, ping, close", cat(pong, ping, closeF), len(pong) + len(ping) + len(closeF)},
		{"a message", text, 0},
		{"a pong, then a message", cat(pong, text), len(pong)},
		{"a pong, then part of a pong", cat(pong, pong[:7]), len(pong)},
		{"part of a pong", pong[:4], 0},
		{"a non-final data frame", partText, 0},
		{"a pong not masked", cat(unmasked, pong), 0},
		{"a pong with reserved bits", cat([]byte{0xca, 0x80, 0, 0, 0, 0}), 0},
		{"a non-final pong", cat([]byte{0x0a, 0x80, 0, 0, 0, 0}), 0},
		{"a pong claiming 126 bytes", cat([]byte{0x8a, 0x80 | 126, 0, 0, 0, 0}, make([]byte, 200)), 0},
	} {
		if got := controlPrefix(c.in); got != c.want {
			t.Errorf("%s: controlPrefix = %d, want %d", c.name, got, c.want)
		}
	}
}
