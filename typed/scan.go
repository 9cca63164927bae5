package typed

import (
	"encoding/binary"
	"math/bits"
)

// A one-pass reader of an envelope's top level.
//
// encoding/json reads an envelope three times: it validates the whole input,
// decodes it, and the payload is then validated and decoded once more into
// the handler's type. On small messages (echo, chat) that was a third of the
// server's CPU. decodeFast validates the input once, exactly as
// encoding/json's grammar does, and takes the four fields the envelope has
// as spans of the input. Whatever it is not sure to read exactly as
// encoding/json would (escapes or non-ASCII in a key, in "type" or in
// "room", a field of the wrong kind, any syntax error) makes it give up, and
// Decode then asks encoding/json: that path decides the error messages and
// the rare forms, the fast one only ever agrees with it (FuzzDecode checks
// that the two agree).

// maxDepth is encoding/json's nesting limit: deeper input is an error there,
// so the fast path gives up on it.
const maxDepth = 10000

// decodeFast fills e from data and reports whether it could. When it returns
// false, e holds nothing reliable and the caller decodes with encoding/json.
func decodeFast(data []byte, e *Envelope) bool {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return skipSpace(data, i+1) == len(data) // {}: valid, no fields
	}
	for {
		// "key"
		ks, ke, plain, ok := scanString(data, i)
		if !ok || !plain {
			return false
		}
		i = skipSpace(data, ke)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		i = skipSpace(data, i+1)
		vs := i
		ve, ok := skipValue(data, i, 1)
		if !ok {
			return false
		}
		if !e.setField(data[ks+1:ke-1], data[vs:ve]) {
			return false
		}
		i = skipSpace(data, ve)
		if i >= len(data) {
			return false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return skipSpace(data, i+1) == len(data)
		default:
			return false
		}
	}
}

// setField stores one member of the envelope. Keys match case-insensitively,
// as encoding/json matches them, and the last of a repeated key wins.
func (e *Envelope) setField(key, v []byte) bool {
	switch {
	case foldEq(key, "type"):
		return setString(&e.Type, v, intern)
	case foldEq(key, "room"):
		return setString(&e.Room, v, func(b []byte) string { return string(b) })
	case foldEq(key, "payload"):
		e.Payload = v
	case foldEq(key, "id"):
		e.ID = v
	}
	return true
}

// setString stores a JSON string without escapes or non-ASCII bytes (the
// ones encoding/json would rewrite); null leaves s as it is, as there.
func setString(s *string, v []byte, str func([]byte) string) bool {
	if string(v) == "null" {
		return true
	}
	if v[0] != '"' {
		return false
	}
	for _, c := range v[1 : len(v)-1] {
		if c == '\\' || c >= 0x80 {
			return false
		}
	}
	*s = str(v[1 : len(v)-1])
	return true
}

// foldEq reports whether ASCII key equals the lower-case name, ignoring case.
// None of the envelope's names holds a 'k' or an 's', the letters that
// encoding/json also folds from non-ASCII runes, so ASCII folding is exact.
func foldEq(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i := range key {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// valid is json.Valid, at the speed of the fast path.
func valid(data []byte) bool {
	end, ok := skipValue(data, skipSpace(data, 0), 0)
	return ok && skipSpace(data, end) == len(data)
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString reads the string starting at data[i] (which must be '"') and
// returns its span including the quotes; plain is false if it holds an
// escape or a byte outside ASCII.
func scanString(data []byte, i int) (start, end int, plain, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return 0, 0, false, false
	}
	start, plain = i, true
	for i++; i < len(data); i++ {
		for i+8 <= len(data) {
			if m := special8(binary.LittleEndian.Uint64(data[i:])); m != 0 {
				i += bits.TrailingZeros64(m) / 8 // the first that needs a look
				break
			}
			i += 8
		}
		if i >= len(data) {
			break
		}
		c := data[i]
		switch {
		case c == '"':
			return start, i + 1, plain, true
		case c < 0x20:
			return 0, 0, false, false
		case c >= 0x80:
			plain = false
		case c == '\\':
			plain = false
			i++
			if i >= len(data) {
				return 0, 0, false, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(data) {
					return 0, 0, false, false
				}
				for _, h := range data[i+1 : i+5] {
					if !isHex(h) {
						return 0, 0, false, false
					}
				}
				i += 4
			default:
				return 0, 0, false, false
			}
		}
	}
	return 0, 0, false, false
}

// special8 marks, with its top bit, each of the 8 bytes in x (the first
// in the lowest byte) that needs a look of its own in a string: a quote, a
// backslash, a control character or a byte of a multi-byte UTF-8 sequence.
// Strings are most of a message, and most of their bytes need none: they
// are passed over a word at a time. A subtraction borrows only from a byte
// that is itself marked, so a byte is marked wrongly only above one marked
// rightly: the lowest mark is always right.
func special8(x uint64) uint64 {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	q := x ^ (lo * '"')
	b := x ^ (lo * '\\')
	return ((x - lo*0x20) | (q - lo) | (b - lo) | x) & hi
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// skipValue reads one JSON value starting at data[i] and returns where it
// ends; depth is the number of containers around it. Containers are followed with a stack of their kinds rather than by
// recursion, so a deeply nested payload costs heap, not the stack of the
// goroutine that reads it.
func skipValue(data []byte, i, depth int) (int, bool) {
	var buf [32]byte
	stack := buf[:0]
	for {
		// A value starts at data[i].
		if i >= len(data) {
			return 0, false
		}
		closed := true // the value just read is complete
		switch c := data[i]; {
		case c == '{' || c == '[':
			// An empty container counts toward the depth too.
			if depth+len(stack) == maxDepth {
				return 0, false
			}
			i = skipSpace(data, i+1)
			if i < len(data) && data[i] == c+2 { // '}' is '{'+2, ']' is '['+2
				i++
				break
			}
			stack = append(stack, c)
			closed = false
			if c == '{' {
				var ok bool
				if i, ok = skipKey(data, i); !ok {
					return 0, false
				}
			}
		case c == '"':
			_, end, _, ok := scanString(data, i)
			if !ok {
				return 0, false
			}
			i = end
		case c == 't':
			if !hasPrefix(data[i:], "true") {
				return 0, false
			}
			i += 4
		case c == 'f':
			if !hasPrefix(data[i:], "false") {
				return 0, false
			}
			i += 5
		case c == 'n':
			if !hasPrefix(data[i:], "null") {
				return 0, false
			}
			i += 4
		default:
			end, ok := scanNumber(data, i)
			if !ok {
				return 0, false
			}
			i = end
		}
		if !closed {
			continue
		}
		// After a complete value: close containers, or move to the next
		// element of the innermost one.
		for {
			if len(stack) == 0 {
				return i, true
			}
			i = skipSpace(data, i)
			if i >= len(data) {
				return 0, false
			}
			top := stack[len(stack)-1]
			if data[i] == top+2 {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			if data[i] != ',' {
				return 0, false
			}
			i = skipSpace(data, i+1)
			if top == '{' {
				var ok bool
				if i, ok = skipKey(data, i); !ok {
					return 0, false
				}
			}
			break
		}
	}
}

// skipKey reads `"key" :` and the space after it.
func skipKey(data []byte, i int) (int, bool) {
	_, end, _, ok := scanString(data, i)
	if !ok {
		return 0, false
	}
	i = skipSpace(data, end)
	if i >= len(data) || data[i] != ':' {
		return 0, false
	}
	return skipSpace(data, i+1), true
}

func hasPrefix(b []byte, s string) bool {
	return len(b) >= len(s) && string(b[:len(s)]) == s
}

// scanNumber reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(data []byte, i int) (int, bool) {
	if i < len(data) && data[i] == '-' {
		i++
	}
	if i >= len(data) {
		return 0, false
	}
	switch {
	case data[i] == '0':
		i++
	case '1' <= data[i] && data[i] <= '9':
		i = digits(data, i)
	default:
		return 0, false
	}
	if i < len(data) && data[i] == '.' {
		j := digits(data, i+1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := digits(data, i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

func digits(data []byte, i int) int {
	for i < len(data) && '0' <= data[i] && data[i] <= '9' {
		i++
	}
	return i
}
