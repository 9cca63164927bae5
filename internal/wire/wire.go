// Package wire holds the few JSON building blocks that typed and rooms
// both write by hand on hot paths (a room encodes every message once, and
// encoding/json's reflection is most of that cost).
package wire

import "encoding/json"

// AppendString appends s as a JSON string.
func AppendString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			b, _ := json.Marshal(s)
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// AppendUint appends n in decimal.
func AppendUint(buf []byte, n uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(buf, tmp[i:]...)
}

// Envelope appends {"type":typ,"payload":payload,"id":id}; payload and id
// are raw JSON, trusted to be valid, and left out when empty (or a null id).
// It is, with EnvelopeStart and EnvelopeEnd, the one place envelopes are
// put together.
func Envelope(buf []byte, typ string, id, payload []byte) []byte {
	buf = append(buf, `{"type":`...)
	buf = AppendString(buf, typ)
	if len(payload) > 0 {
		buf = append(buf, `,"payload":`...)
		buf = append(buf, payload...)
	}
	return EnvelopeEnd(buf, id)
}

// EnvelopeStart begins the envelope of type typ with a payload that the
// caller appends right after it and follows with EnvelopeEnd: the same
// bytes as Envelope, without building the payload apart first.
func EnvelopeStart(buf []byte, typ string) []byte {
	buf = append(buf, `{"type":`...)
	buf = AppendString(buf, typ)
	return append(buf, `,"payload":`...)
}

// EnvelopeEnd ends an envelope: its id, if any, and the closing brace.
func EnvelopeEnd(buf []byte, id []byte) []byte {
	if len(id) > 0 && string(id) != "null" {
		buf = append(buf, `,"id":`...)
		buf = append(buf, id...)
	}
	return append(buf, '}')
}

// Error builds the error envelope {"type":"error","id":id,"payload":{"code","message"}}.
func Error(id []byte, code, message string) []byte {
	p := append([]byte(`{"code":`), AppendString(nil, code)...)
	p = append(p, `,"message":`...)
	p = AppendString(p, message)
	p = append(p, '}')
	return Envelope(make([]byte, 0, len(p)+48), "error", id, p)
}
