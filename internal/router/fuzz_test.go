package router_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/troupehq/troupe/internal/router"
	"github.com/troupehq/troupe/typed"
)

// fuzzCtx is the per-message context of the fuzzed router: it records which
// handler ran and with what, so the fuzz target can check that a handler runs
// exactly when its payload decodes.
type fuzzCtx struct {
	called string
	msg    any
}

type fuzzJoin struct {
	Room string         `json:"room"`
	Meta map[string]any `json:"meta"`
}

// fuzzNested exercises the decoder on recursive, repeated and numeric fields.
type fuzzNested struct {
	Name  string            `json:"name"`
	Tags  []string          `json:"tags"`
	Attrs map[string]string `json:"attrs"`
	Nums  []float64         `json:"nums"`
	Count int32             `json:"count"`
	Ratio float64           `json:"ratio"`
	Small uint8             `json:"small"`
	Flag  *bool             `json:"flag"`
	Child *fuzzNested       `json:"child"`
}

// fuzzPanicValue is what the "boom" handler panics with; it must never reach
// the client.
const fuzzPanicValue = "secret-panic-value"

func newFuzzRouter() *router.Router[*fuzzCtx] {
	r := router.NewRouter[*fuzzCtx]()
	router.Handle(r, "echo", func(c *fuzzCtx, m json.RawMessage) error {
		c.called, c.msg = "echo", m
		return nil
	})
	router.Handle(r, "join", func(c *fuzzCtx, m fuzzJoin) error {
		c.called, c.msg = "join", m
		if m.Room == "" {
			return typed.NewError(typed.CodeInvalidPayload, "room is required")
		}
		return nil
	})
	router.Handle(r, "nested", func(c *fuzzCtx, m fuzzNested) error {
		c.called, c.msg = "nested", m
		return nil
	})
	router.Handle(r, "fail", func(c *fuzzCtx, _ struct{}) error {
		c.called = "fail"
		return errors.New("plain failure")
	})
	router.Handle(r, "boom", func(c *fuzzCtx, _ struct{}) error {
		c.called = "boom"
		panic(fuzzPanicValue)
	})
	r.HandleEnvelope("raw", func(c *fuzzCtx, env *typed.Envelope) error {
		c.called, c.msg = "raw", env
		return nil
	})
	return r
}

// decodes reports whether payload decodes into a fresh T the way the
// router's documentation says: a missing or null payload leaves T at its
// zero value, anything else goes through encoding/json.
func decodes[T any](payload json.RawMessage) bool {
	if len(payload) == 0 || string(payload) == "null" {
		return true
	}
	var v T
	return json.Unmarshal(payload, &v) == nil
}

// FuzzDecodeDispatch feeds arbitrary bytes through Decode and, when they are
// an envelope, through a Router's Dispatch, the way the server handles a
// text frame. It checks that nothing panics, that a handler runs exactly when
// its payload decodes, that only the handler that panics yields a
// *PanicError, and that every answer a client would get is one JSON error
// envelope that echoes the request id (valid UTF-8 for a request that is).
func FuzzDecodeDispatch(f *testing.F) {
	r := newFuzzRouter()
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := typed.Decode(data)
		trimmed := bytes.TrimLeft(data, " \t\r\n")
		if err != nil {
			if !errors.Is(err, typed.ErrNotEnvelope) {
				t.Fatalf("Decode error %v does not wrap ErrNotEnvelope", err)
			}
			checkErrorEnvelope(t, typed.NewError(typed.CodeBadRequest, err.Error()), nil, utf8.Valid(data))
			return
		}
		// What Decode accepts must be one JSON object with a string type.
		if !json.Valid(data) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("Decode accepted %q, which is not a JSON object", data)
		}
		if env.Type == "" {
			t.Fatalf("Decode accepted %q with an empty type", data)
		}
		checkID(t, env.ID)
		checkRoundTrip(t, env)

		c := &fuzzCtx{}
		err = r.Dispatch(c, env)
		var pe *typed.PanicError
		if errors.As(err, &pe) && env.Type != "boom" {
			t.Fatalf("Dispatch of %q returned a panic: %v", env.Type, err)
		}

		var wantCall bool
		switch env.Type {
		case "echo":
			wantCall = decodes[json.RawMessage](env.Payload)
			if err != nil {
				t.Fatalf("echo: Dispatch error %v for payload %q", err, env.Payload)
			}
			if got, _ := c.msg.(json.RawMessage); string(env.Payload) != "null" && !bytes.Equal(got, env.Payload) {
				t.Fatalf("echo: handler got payload %q, envelope has %q", got, env.Payload)
			}
		case "join":
			wantCall = decodes[fuzzJoin](env.Payload)
			room := ""
			if m, ok := c.msg.(fuzzJoin); ok {
				room = m.Room
			}
			wantErr := !wantCall || room == ""
			if (err != nil) != wantErr {
				t.Fatalf("join: Dispatch error %v, want error: %v (payload %q)", err, wantErr, env.Payload)
			}
			if err != nil {
				expectCode(t, err, typed.CodeInvalidPayload)
			}
		case "nested":
			wantCall = decodes[fuzzNested](env.Payload)
			if wantCall && err != nil {
				t.Fatalf("nested: Dispatch error %v for a payload that decodes: %q", err, env.Payload)
			}
			if !wantCall {
				expectCode(t, err, typed.CodeInvalidPayload)
			}
		case "fail":
			wantCall = decodes[struct{}](env.Payload)
			if wantCall {
				expectCode(t, err, typed.CodeHandlerError)
			} else {
				expectCode(t, err, typed.CodeInvalidPayload)
			}
		case "boom":
			wantCall = decodes[struct{}](env.Payload)
			if wantCall {
				if pe == nil || pe.Type != "boom" || pe.Value != fuzzPanicValue {
					t.Fatalf("boom: Dispatch returned %#v, want the handler's panic", err)
				}
				if ce := router.ClientError(err); ce.Code != typed.CodeInternal || strings.Contains(ce.Message, fuzzPanicValue) {
					t.Fatalf("boom: client told %+v, want %q without the panic value", ce, typed.CodeInternal)
				}
			} else {
				expectCode(t, err, typed.CodeInvalidPayload)
			}
		case "raw":
			wantCall = true
			if err != nil || c.msg != env {
				t.Fatalf("raw: Dispatch error %v, handler saw %p, want %p", err, c.msg, env)
			}
		default:
			expectCode(t, err, typed.CodeUnknownType)
		}
		if called := c.called != ""; called != wantCall {
			t.Fatalf("%q: handler called %v, want %v (payload %q)", env.Type, called, wantCall, env.Payload)
		}
		if err != nil {
			checkErrorEnvelope(t, router.ClientError(err), env.ID, utf8.Valid(data))
		}
	})
}

// expectCode checks that err tells the client code.
func expectCode(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want code %q", code)
	}
	if got := router.ClientError(err).Code; got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

// checkID checks that an id Decode accepted is JSON null, a string or a
// number: the only kinds a reply may echo.
func checkID(t *testing.T, id json.RawMessage) {
	t.Helper()
	if len(id) == 0 {
		return
	}
	d := json.NewDecoder(bytes.NewReader(id))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("id %q is not JSON: %v", id, err)
	}
	switch v.(type) {
	case nil, string, json.Number:
	default:
		t.Fatalf("Decode accepted id %s of kind %T", id, v)
	}
}

// checkRoundTrip checks that an envelope re-encoded with EncodeWithID
// decodes to the same type, payload and id (a null id is left out): what a
// reply that echoes a request carries.
func checkRoundTrip(t *testing.T, env *typed.Envelope) {
	t.Helper()
	b, err := typed.EncodeWithID(env.Type, env.Payload, env.ID)
	if err != nil {
		t.Fatalf("EncodeWithID of a decoded envelope: %v", err)
	}
	back, err := typed.Decode(b)
	if err != nil {
		t.Fatalf("re-encoded envelope %q does not decode: %v", b, err)
	}
	wantID := env.ID
	if string(wantID) == "null" {
		wantID = nil
	}
	if back.Type != env.Type || !bytes.Equal(back.Payload, env.Payload) || !bytes.Equal(back.ID, wantID) {
		t.Fatalf("round trip changed the envelope: %+v became %+v", env, back)
	}
}

// checkErrorEnvelope checks the frame a client is sent for e: one JSON
// object {"type":"error","payload":{"code","message"},"id"} with the
// request's id, and valid UTF-8 (as a text frame must be) when the request
// was. The id is echoed as the client wrote it, so a request that is not
// UTF-8 cannot be promised a reply that is: the WebSocket layer must refuse
// such text frames before they are decoded.
func checkErrorEnvelope(t *testing.T, e *typed.Error, id json.RawMessage, inputUTF8 bool) {
	t.Helper()
	b := router.ErrorEnvelope(e, id)
	if inputUTF8 && !utf8.Valid(b) {
		t.Fatalf("error envelope is not valid UTF-8: %q", b)
	}
	env, err := typed.Decode(b)
	if err != nil {
		t.Fatalf("error envelope %q does not decode: %v", b, err)
	}
	var p struct {
		Code    *string `json:"code"`
		Message *string `json:"message"`
	}
	if err := json.Unmarshal(env.Payload, &p); err != nil || p.Code == nil || p.Message == nil {
		t.Fatalf("error envelope %q: payload is not {code, message} (%v)", b, err)
	}
	wantID := string(id)
	if wantID == "null" {
		wantID = ""
	}
	if env.Type != "error" || *p.Code != e.Code || *p.Code == "" || string(env.ID) != wantID {
		t.Fatalf("error envelope %q, want type error, code %q, id %q", b, e.Code, wantID)
	}
}
