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

// unpack builds the header anew; its strings share the packed bytes. It
// runs when an application asks (Session.Header), not per message.
func (p packedHeader) unpack() http.Header {
	h := make(http.Header)
	s := string(p)
	length := func() uint64 {
		n, k := binary.Uvarint([]byte(s[:min(len(s), binary.MaxVarintLen64)]))
		if k <= 0 {
			s = "" // not what packHeader wrote: stop
			return 0
		}
		s = s[k:]
		return min(n, uint64(len(s)))
	}
	field := func() string {
		n := length()
		v := s[:n]
		s = s[n:]
		return v
	}
	for len(s) > 0 {
		key := field()
		vs := make([]string, length())
		for i := range vs {
			vs[i] = field()
		}
		h[key] = vs
	}
	return h
}
