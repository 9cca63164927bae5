package session

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestHeaderKeepsEveryFieldButTheHandshakes(t *testing.T) {
	long := strings.Repeat("v", 300) // a length over one varint byte
	in := http.Header{
		"Cookie":                {"a=1; b=2"},
		"X-Many":                {"one", "", long},
		"Origin":                {"https://example.com"},
		"X-Empty":               {},
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Version": {"13"},
	}
	want := http.Header{
		"Cookie":  {"a=1; b=2"},
		"X-Many":  {"one", "", long},
		"Origin":  {"https://example.com"},
		"X-Empty": {},
	}
	got := packHeader(in).unpack()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("unpacked %v, want %v", got, want)
	}
	got.Set("Cookie", "changed")
	if again := packHeader(in).unpack(); again.Get("Cookie") != "a=1; b=2" {
		t.Fatalf("a copy's change reached the next copy: %q", again.Get("Cookie"))
	}
	if h := packHeader(nil).unpack(); h == nil || len(h) != 0 {
		t.Fatalf("no header unpacks as %#v, want an empty header", h)
	}
}
