package serve

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/troupehq/troupe/internal/session"
)

// The upgrade's response is whole whether the handler writes it (under
// net/http's own ResponseWriter) or net/http does (under an application's
// wrapper, which must see the 101), and the connection works behind it.
func TestUpgradeResponse(t *testing.T) {
	echo := Hooks{OnFrame: func(s *session.Session, binary bool, data []byte) {
		_ = session.SendFrame(s, session.Frame{Data: data, Binary: binary})
	}}
	check := func(t *testing.T, resp *http.Response) {
		t.Helper()
		want := map[string]string{
			"Upgrade":                "websocket",
			"Connection":             "Upgrade",
			"Sec-Websocket-Accept":   "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", // RFC 6455's example key
			"Sec-Websocket-Protocol": SubprotocolNDJSON,
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
	}
	const offer = "Sec-WebSocket-Protocol: " + SubprotocolNDJSON + "\r\n"

	t.Run("net/http's writer", func(t *testing.T) {
		addr, _ := serve(t, "adopted", Config{}, echo)
		c, resp := dialRawWith(t, addr, offer, maskedFrame(0x81, []byte("behind")))
		check(t, resp)
		if d := resp.Header.Get("Date"); d != "" {
			// net/http's chunk writer adds a Date; the handler's 101 has none.
			t.Errorf("the 101 went through net/http (Date %q)", d)
		}
		c.expect(t, "behind")
		c.write(t, maskedFrame(0x81, []byte("after")))
		c.expect(t, "after")
	})

	t.Run("an application's writer", func(t *testing.T) {
		_, h := serve(t, "adopted", Config{}, echo)
		statuses := make(chan int, 4)
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(&statusRecorder{ResponseWriter: w, statuses: statuses}, r)
		}))
		t.Cleanup(ts.Close)
		c, resp := dialRawWith(t, ts.Listener.Addr().String(), offer, nil)
		check(t, resp)
		select {
		case got := <-statuses:
			if got != http.StatusSwitchingProtocols {
				t.Errorf("the application's writer was told %d, want 101", got)
			}
		default:
			// The response was read: a WriteHeader that came is queued.
			t.Error("the application's writer was told no status")
		}
		c.write(t, maskedFrame(0x81, []byte("through")))
		c.expect(t, "through")
	})
}

// statusRecorder is a middleware's ResponseWriter that records statuses.
type statusRecorder struct {
	http.ResponseWriter
	statuses chan int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.statuses <- code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// A header field cannot end the 101 or add a field of its own: a name that
// is not a token is left out, and line breaks in a value become spaces.
func TestAppendSwitchingKeepsFieldsApart(t *testing.T) {
	hdr := http.Header{
		"Upgrade":     {"websocket"},
		"X-Note":      {"a\r\nSet-Cookie: stolen=1\r\n\r\nbody", "second\tvalue"},
		"Bad Name":    {"x"},
		"Bad\r\nName": {"y"},
	}
	raw := appendSwitching(nil, hdr)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("Set-Cookie"); got != "" {
		t.Errorf("a value added Set-Cookie: %q", got)
	}
	if got := resp.Header.Values("X-Note"); len(got) != 2 || got[0] != "a  Set-Cookie: stolen=1    body" || got[1] != "second\tvalue" {
		t.Errorf("X-Note: %q", got)
	}
	if len(resp.Header) != 2 {
		t.Errorf("fields %v, want Upgrade and X-Note", resp.Header)
	}
	if !bytes.HasSuffix(raw, []byte("\r\n\r\n")) || bytes.Count(raw, []byte("\r\n\r\n")) != 1 {
		t.Errorf("the response does not end once, at its end: %q", raw)
	}
}
