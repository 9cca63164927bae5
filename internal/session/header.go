package session

import (
	"encoding/binary"
	"net/http"
	"sort"
)

// packedHeader is the upgrade request's header as a session keeps it: one
// string, each field a key and its values, each length-prefixed.
//
// Why: the header net/http parsed (a map, a slice of values, a string per
// line) was the largest thing an idle connection kept that was not the
// connection itself, about 650 bytes for a bare WebSocket handshake and
// more for a browser's (cookies, user agent, languages). Packed, it is the
// bytes of the fields alone. The WebSocket handshake's own fields are left
// out: they served the upgrade and mean nothing after it.
type packedHeader string

// handshakeFields are the fields packHeader leaves out.
var handshakeFields = map[string]bool{
	"Connection":               true,
	"Upgrade":                  true,
	"Sec-Websocket-Key":        true,
	"Sec-Websocket-Version":    true,
	"Sec-Websocket-Extensions": true,
}

func packHeader(h http.Header) packedHeader {
	keys := make([]string, 0, len(h))
	size := 0
	for k, vs := range h {
		if handshakeFields[http.CanonicalHeaderKey(k)] {
			continue
		}
		keys = append(keys, k)
		size += 2*binary.MaxVarintLen32 + len(k)
		for _, v := range vs {
			size += binary.MaxVarintLen32 + len(v)
		}
	}
	if len(keys) == 0 {
		return ""
	}
	sort.Strings(keys) // the same header packs the same way
	b := make([]byte, 0, size)
	for _, k := range keys {
		vs := h[k]
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	return packedHeader(b)
}

// unpack builds the header anew; its strings share the packed bytes.
func (p packedHeader) unpack() http.Header {
	h := make(http.Header)
	s := string(p)
	var n uint64
	for len(s) > 0 {
		var key string
		key, s = field(s)
		n, s = uvarint(s)
		vs := make([]string, min(n, uint64(len(s))))
		for i := range vs {
			vs[i], s = field(s)
		}
		h[key] = vs
	}
	return h
}

// field reads a length-prefixed string off s.
func field(s string) (string, string) {
	n, s := uvarint(s)
	n = min(n, uint64(len(s)))
	return s[:n], s[n:]
}

// uvarint reads binary.AppendUvarint's encoding off s.
func uvarint(s string) (uint64, string) {
	var x uint64
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		b := s[i]
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return x, s[i+1:]
		}
	}
	return 0, ""
}
