package typed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// scanSeeds are inputs at the edges of the grammar and of the fast path.
var scanSeeds = []string{
	`{"type":"chat","payload":{"text":"hi","n":[1,2.5e-3,{"a":null}]},"id":"r1","room":"lobby"}`,
	`{"TYPE":"a","Payload":[],"iD":7,"ROOM":null}`,
	`{"type":"a","type":"b","payload":1,"payload":{}}`,
	`{"type":"a\u0062"}`, `{"\u0074ype":"a"}`, `{"type":"é"}`, `{"type":1}`,
	`{"type":"a","id":-0.0e+0}`, `{"type":"a","id":01}`, `{"type":"a","id":1.}`,
	"{\"type\":\"a\",\"payload\":\"\x01\"}", `{"type":"a","payload":"\ud800"}`,
	`{"type":"a","payload":[1,]}`, `{"type":"a",}`, `{"type":"a"} x`, ` {} `,
	`[]`, `null`, `"type"`, `{"type":"a","payload":{"k":tru}}`, "{\"type\":\"a\",\"payload\":\"\xff\"}",
	`{"type":"a","payload":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	`{"type":"a","payload":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `}`,
	`{"type":"a","payload":` + strings.Repeat("[", 9999) + `[]` + strings.Repeat("]", 9999) + `}`,
	strings.Repeat("[", 10000) + `[]` + strings.Repeat("]", 10000),
	strings.Repeat("[", 9999) + `{}` + strings.Repeat("]", 9999),
	// Strings long enough to be read a word at a time.
	`{"type":"bench.echo.long.name","payload":"0123456789abcdef\"quoted\" and \\ é ü \u00e9 end"}`,
	"{\"type\":\"a\",\"payload\":\"01234567\x1f89abcdef\"}",
}

// TestScanStringStopsAtEveryByteThatMatters puts each byte value at each
// place of a word-sized stretch of a string: read a word at a time, the
// string must still end, fail or be marked not plain exactly where a
// byte-by-byte reading would.
func TestScanStringStopsAtEveryByteThatMatters(t *testing.T) {
	for c := 0; c < 256; c++ {
		for at := 0; at < 17; at++ {
			body := []byte(strings.Repeat("x", 20))
			body[at] = byte(c)
			data := append(append([]byte{'"'}, body...), '"')
			_, end, plain, ok := scanString(data, 0)
			// A quote ends the string there (the rest is not a string's).
			if want := c == '"' || json.Valid(data); ok != want {
				t.Fatalf("byte %#x at %d: ok %v, json.Valid %v", c, at, ok, want)
			}
			if !ok {
				continue
			}
			wantEnd := len(data)
			if c == '"' {
				wantEnd = at + 2
			}
			if wantPlain := c < 0x80 && c != '\\'; end != wantEnd || plain != wantPlain {
				t.Fatalf("byte %#x at %d: end %d plain %v, want %d %v", c, at, end, plain, wantEnd, wantPlain)
			}
		}
	}
}

// FuzzDecodeFast checks the fast path against encoding/json: its validator
// accepts exactly what json.Valid accepts, and whenever it reads an
// envelope, encoding/json reads the same one.
func FuzzDecodeFast(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if v := valid(data); v != json.Valid(data) {
			t.Fatalf("valid says %v, json.Valid says %v, for %q", v, !v, data)
		}
		var fast Envelope
		if !decodeFast(data, &fast) {
			return
		}
		var slow Envelope
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("fast path read %q, encoding/json refused it: %v", data, err)
		}
		if fast.Type != slow.Type || fast.Room != slow.Room ||
			!bytes.Equal(fast.Payload, slow.Payload) || !bytes.Equal(fast.ID, slow.ID) {
			t.Fatalf("%q: fast path read %+v, encoding/json %+v", data, fast, slow)
		}
	})
}

// TestDecodeFastTakesCommonEnvelopes keeps the fast path in use: a change
// that made it give up on ordinary envelopes would pass every other test
// and quietly cost the CPU it exists to save.
func TestDecodeFastTakesCommonEnvelopes(t *testing.T) {
	for _, s := range []string{
		`{"type":"bench.echo","payload":"1:2:3:xxxx"}`,
		`{"type":"room.publish","payload":{"room":"r","body":"hi"},"id":3}`,
		` {"id":"a-1","type":"chat.message","payload":{"text":"caf\u00e9","to":["x"]},"room":"lobby"} `,
	} {
		var e Envelope
		if !decodeFast([]byte(s), &e) {
			t.Errorf("fast path gave up on %s", s)
		}
	}
}

// A client that sends a new type in every message makes the decoder keep
// at most maxInterned short names; every envelope still reads as its own,
// and a long name or a room is never kept.
func TestInternedNamesAreBounded(t *testing.T) {
	long := strings.Repeat("l", maxInternLen+1)
	for i := range 2*maxInterned + 1 {
		typ := fmt.Sprint("flood.", i)
		if i == 2*maxInterned {
			typ = long
		}
		e, err := Decode([]byte(`{"type":"` + typ + `","room":"r` + typ + `"}`))
		if err != nil || e.Type != typ || e.Room != "r"+typ {
			t.Fatalf("envelope %d read as %+v, %v", i, e, err)
		}
	}
	m := interned.Load()
	if m == nil || len(*m) > maxInterned {
		t.Fatalf("names kept: %v, want at most %d", m != nil, maxInterned)
	}
	if _, kept := (*m)[long]; kept {
		t.Error("a name longer than maxInternLen was kept")
	}
	if _, kept := (*m)["rflood.0"]; kept {
		t.Error("a room was kept")
	}
}
