package serve

import (
	"bufio"
	"net"
	"net/http"
	"reflect"
	"time"
)

// The 101 response of an upgrade, written by us after the hijack.
//
// coder/websocket answers an upgrade with WriteHeader(101) and then
// Hijack. Served by net/http, that formats the response through its
// chunk writer (a clone of the header map, a Date, the keys sorted) and
// flushes it from inside Hijack: in a storm of connections, 2-3 % of the
// server's CPU beside the write itself, for 130 bytes that never change
// shape. Under
// net/http's own ResponseWriter the handler therefore holds the 101 back,
// hijacks with nothing written, and writes the response itself, in one
// write on the hijacked connection, before the connection is handed to
// anything that could write to it.
//
// That is only done where nobody else watches the status: a ResponseWriter
// of the application's (a middleware that logs statuses, say) is told of
// the 101 as before, through its own WriteHeader.

// isNetHTTPResponse reports whether w is net/http's own ResponseWriter for
// HTTP/1.x, told at run time by its type's package and name, since the
// standard library does not export it. Were that type renamed, the 101
// would go through net/http again: slower, never wrong.
func isNetHTTPResponse(w http.ResponseWriter) bool {
	t := reflect.TypeOf(w)
	return t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "net/http" && t.Elem().Name() == "response"
}

// holdSwitching reports whether WriteHeader(101) is held for Hijack to
// write: once, under net/http's own writer.
func (h *hijackCapture) holdSwitching(code int) bool {
	return code == http.StatusSwitchingProtocols && h.hold && !h.held
}

// release passes a held 101 on to the ResponseWriter, for a caller that
// writes a body or flushes instead of hijacking.
func (h *hijackCapture) release() {
	if h.held {
		h.held = false
		h.ResponseWriter.WriteHeader(http.StatusSwitchingProtocols)
	}
}

func (h *hijackCapture) Write(p []byte) (int, error) {
	if h.hijacked {
		return 0, http.ErrHijacked
	}
	h.release()
	return h.ResponseWriter.Write(p)
}

// Flush passes on a held 101 before flushing, as net/http would have
// written it by then.
func (h *hijackCapture) Flush() {
	if h.hijacked {
		return
	}
	h.release()
	_ = http.NewResponseController(h.ResponseWriter).Flush()
}

// writeSwitching writes the held 101 on the hijacked connection c: what
// the socket takes at once (all of it, on a fresh connection), and the
// rest, if any, within HandshakeTimeout from then, since net/http cleared
// the connection's deadlines at the hijack. net/http's write buffer is empty
// after the hijack and dropped with it: the response is built in its
// memory.
func (h *hijackCapture) writeSwitching(c net.Conn, raw *rawWriter, bw *bufio.Writer) error {
	p := appendSwitching(bw.AvailableBuffer(), h.ResponseWriter.Header())
	if raw != nil {
		p = p[raw.try(p):]
		if len(p) == 0 {
			return nil
		}
	}
	if h.timeout > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(h.timeout))
		defer func() { _ = c.SetWriteDeadline(time.Time{}) }()
	}
	_, err := c.Write(p)
	return err
}

// appendSwitching appends a 101 response with header hdr, in the form
// net/http writes one: a field whose name is not a token is left out, and
// control characters other than tab in values become spaces, so that no
// value can end the response or start another. Content-Length and
// Transfer-Encoding, which a middleware may have set, are left out too,
// as net/http leaves them out of a response without a body: after a 101
// the bytes are the WebSocket's, not a body's.
func appendSwitching(p []byte, hdr http.Header) []byte {
	p = append(p, "HTTP/1.1 101 Switching Protocols\r\n"...)
	for k, vs := range hdr {
		if !isToken(k) || k == "Content-Length" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vs {
			p = append(p, k...)
			p = append(p, ": "...)
			for i := 0; i < len(v); i++ {
				b := v[i]
				if b < ' ' && b != '\t' || b == 0x7f {
					b = ' '
				}
				p = append(p, b)
			}
			p = append(p, "\r\n"...)
		}
	}
	return append(p, "\r\n"...)
}

// isToken reports whether s is an RFC 9110 token, the form of a field name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '!', c == '#', c == '$', c == '%', c == '&', c == '\'', c == '*',
			c == '+', c == '-', c == '.', c == '^', c == '_', c == '`', c == '|', c == '~':
		default:
			return false
		}
	}
	return true
}
