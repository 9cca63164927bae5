// Package typed is Troupe's message layer: JSON envelopes
// {"type": "...", "payload": {...}, "id": ..., "room": "..."} decoded into Go
// structs and dispatched to a handler registered for their type.
//
// It imports nothing else of Troupe, so the codec and the router can be used
// (and tested) on their own.
package typed

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/troupehq/troupe/internal/wire"
)

// Envelope is one message on the wire. Payload and ID are kept as raw JSON:
// the payload is decoded only into the handler's own type, and the ID is
// echoed back exactly as the client wrote it (string or number).
type Envelope struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
	ID      json.RawMessage `json:"id,omitempty"`
	Room    string          `json:"room,omitempty"`
}

// ErrNotEnvelope is returned by Decode for input that is not a JSON object
// with a non-empty string "type".
var ErrNotEnvelope = errors.New("typed: not an envelope")

// Decode parses one envelope. Anything that is not a JSON object with a
// non-empty "type" gives an error wrapping ErrNotEnvelope.
func Decode(data []byte) (*Envelope, error) {
	var e Envelope
	if decodeFast(data, &e) {
		e.ownSpans()
	} else {
		e = Envelope{}
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, &decodeError{err}
		}
	}
	if e.Type == "" {
		return nil, &decodeError{errors.New(`missing "type"`)}
	}
	if len(e.ID) > 0 && !validID(e.ID) {
		return nil, &decodeError{errors.New(`"id" must be a string or a number`)}
	}
	return &e, nil
}

// ownSpans copies Payload and ID out of the input (into one allocation), so
// that the envelope does not share the caller's buffer, as with
// encoding/json.
func (e *Envelope) ownSpans() {
	if len(e.Payload)+len(e.ID) == 0 {
		return
	}
	b := make([]byte, 0, len(e.Payload)+len(e.ID))
	b = append(b, e.Payload...)
	b = append(b, e.ID...)
	e.Payload, e.ID = nilIfEmpty(b[:len(e.Payload):len(e.Payload)]), nilIfEmpty(b[len(e.Payload):])
}

func nilIfEmpty(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return b
}

type decodeError struct{ err error }

func (e *decodeError) Error() string        { return "typed: not an envelope: " + e.err.Error() }
func (e *decodeError) Is(target error) bool { return target == ErrNotEnvelope }
func (e *decodeError) Unwrap() error        { return e.err }

func validID(id json.RawMessage) bool {
	switch id[0] {
	case '"':
		return true
	case 'n': // null: treated as absent
		return true
	}
	_, err := strconv.ParseFloat(string(id), 64)
	return err == nil
}

// Encode builds the envelope {"type": typ, "payload": payload}. A payload
// that is already JSON ([]byte or json.RawMessage) is used as it is; a nil
// or empty one leaves "payload" out.
func Encode(typ string, payload any) ([]byte, error) { return EncodeWithID(typ, payload, nil) }

// EncodeWithID is Encode with the request ID a reply answers.
func EncodeWithID(typ string, payload any, id json.RawMessage) ([]byte, error) {
	var p []byte
	switch v := payload.(type) {
	case nil:
	case json.RawMessage:
		p = v
	case []byte:
		p = v
	default:
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, err
		}
		return wire.Envelope(make([]byte, 0, len(b)+len(typ)+32), typ, id, b), nil
	}
	if len(p) > 0 && !valid(p) {
		return nil, errors.New("typed: payload is not valid JSON")
	}
	return wire.Envelope(make([]byte, 0, len(p)+len(typ)+32), typ, id, p), nil
}
