package router_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/troupehq/troupe/internal/router"
	"github.com/troupehq/troupe/typed"
)

// conn stands in for the per-message context an application passes to its
// handlers.
type conn struct {
	name  string
	calls []string
}

type join struct {
	Room string `json:"room"`
	Seat int    `json:"seat"`
}

func mustDecode(t *testing.T, s string) *typed.Envelope {
	t.Helper()
	env, err := typed.Decode([]byte(s))
	if err != nil {
		t.Fatalf("Decode(%s): %v", s, err)
	}
	return env
}

func asTypedError(t *testing.T, err error) *typed.Error {
	t.Helper()
	var e *typed.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *typed.Error", err, err)
	}
	return e
}

func TestHandleDecodesPayload(t *testing.T) {
	r := router.NewRouter[*conn]()
	var got join
	var gotConn *conn
	router.Handle(r, "join", func(c *conn, msg join) error {
		gotConn, got = c, msg
		return nil
	})

	c := &conn{name: "a"}
	if err := r.Dispatch(c, mustDecode(t, `{"type":"join","payload":{"room":"lobby","seat":3,"extra":true}}`)); err != nil {
		t.Fatalf("Dispatch: %v", err)
	}
	if gotConn != c {
		t.Fatal("handler did not receive the context passed to Dispatch")
	}
	if got != (join{Room: "lobby", Seat: 3}) {
		t.Fatalf("handler got %+v, want {lobby 3}", got)
	}
}

func TestHandleMissingOrNullPayloadGivesZeroValue(t *testing.T) {
	for _, in := range []string{`{"type":"join"}`, `{"type":"join","payload":null}`} {
		r := router.NewRouter[*conn]()
		called := false
		got := join{Room: "sentinel"}
		router.Handle(r, "join", func(_ *conn, msg join) error {
			called, got = true, msg
			return nil
		})
		if err := r.Dispatch(&conn{}, mustDecode(t, in)); err != nil {
			t.Fatalf("Dispatch(%s): %v", in, err)
		}
		if !called || got != (join{}) {
			t.Fatalf("Dispatch(%s): called=%v msg=%+v, want called with the zero value", in, called, got)
		}
	}
}

func TestHandlePointerAndScalarPayloads(t *testing.T) {
	r := router.NewRouter[*conn]()
	var gotPtr *join
	var gotNums []int
	router.Handle(r, "ptr", func(_ *conn, msg *join) error { gotPtr = msg; return nil })
	router.Handle(r, "nums", func(_ *conn, msg []int) error { gotNums = msg; return nil })

	if err := r.Dispatch(&conn{}, mustDecode(t, `{"type":"ptr","payload":{"room":"r"}}`)); err != nil {
		t.Fatal(err)
	}
	if gotPtr == nil || gotPtr.Room != "r" {
		t.Fatalf("pointer payload = %+v, want room r", gotPtr)
	}
	if err := r.Dispatch(&conn{}, mustDecode(t, `{"type":"nums","payload":[3,1,2]}`)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(gotNums) != "[3 1 2]" {
		t.Fatalf("slice payload = %v, want [3 1 2]", gotNums)
	}
}

func TestDispatchUnknownType(t *testing.T) {
	r := router.NewRouter[*conn]()
	router.Handle(r, "known", func(*conn, join) error { return nil })

	err := r.Dispatch(&conn{}, mustDecode(t, `{"type":"nope"}`))
	e := asTypedError(t, err)
	if e.Code != typed.CodeUnknownType {
		t.Fatalf("code %q, want %q", e.Code, typed.CodeUnknownType)
	}
	if !strings.Contains(e.Message, "nope") {
		t.Fatalf("message %q does not name the type", e.Message)
	}
	if ce := router.ClientError(err); ce.Code != typed.CodeUnknownType {
		t.Fatalf("ClientError code %q, want %q", ce.Code, typed.CodeUnknownType)
	}
}

func TestDispatchInvalidPayloadDoesNotCallHandler(t *testing.T) {
	payloads := []string{
		`{"room":5}`,     // wrong field type
		`"lobby"`,        // string where an object is expected
		`[{"room":"x"}]`, // array where an object is expected
		`{"seat":1.5}`,   // fraction into an int
		`{"seat":1e40}`,  // out of range for an int
	}
	for _, p := range payloads {
		r := router.NewRouter[*conn]()
		called := false
		router.Handle(r, "join", func(*conn, join) error { called = true; return nil })

		err := r.Dispatch(&conn{}, mustDecode(t, `{"type":"join","payload":`+p+`}`))
		e := asTypedError(t, err)
		if e.Code != typed.CodeInvalidPayload {
			t.Fatalf("payload %s: code %q, want %q", p, e.Code, typed.CodeInvalidPayload)
		}
		if called {
			t.Fatalf("payload %s: handler called with a payload that did not decode", p)
		}
	}
	// A payload that decodes must still reach the handler.
	r := router.NewRouter[*conn]()
	called := false
	router.Handle(r, "join", func(*conn, join) error { called = true; return nil })
	if err := r.Dispatch(&conn{}, mustDecode(t, `{"type":"join","payload":{"room":"x","seat":2}}`)); err != nil || !called {
		t.Fatalf("valid payload: err=%v called=%v", err, called)
	}
}

func TestHandlerErrors(t *testing.T) {
	plain := errors.New("database unavailable")
	own := typed.NewError("room_full", "the room is full")
	tests := []struct {
		name        string
		ret         error
		wantCode    string
		wantMessage string
	}{
		{"typed error", own, "room_full", "the room is full"},
		{"wrapped typed error", fmt.Errorf("joining: %w", own), "room_full", "the room is full"},
		{"plain error", plain, typed.CodeHandlerError, "database unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := router.NewRouter[*conn]()
			router.Handle(r, "join", func(*conn, join) error { return tt.ret })

			err := r.Dispatch(&conn{}, mustDecode(t, `{"type":"join","payload":{}}`))
			if !errors.Is(err, tt.ret) {
				t.Fatalf("Dispatch returned %v, want the handler's error", err)
			}
			ce := router.ClientError(err)
			if ce.Code != tt.wantCode || ce.Message != tt.wantMessage {
				t.Fatalf("ClientError = %+v, want {%s %s}", ce, tt.wantCode, tt.wantMessage)
			}
		})
	}
}

func TestHandlerPanicIsRecovered(t *testing.T) {
	const secret = "password=hunter2"
	r := router.NewRouter[*conn]()
	router.Handle(r, "boom", func(*conn, join) error { panic(secret) })

	var err error
	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("panic escaped Dispatch: %v", v)
			}
		}()
		err = r.Dispatch(&conn{}, mustDecode(t, `{"type":"boom"}`))
	}()

	var pe *typed.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Dispatch returned %v (%T), want *PanicError", err, err)
	}
	if pe.Type != "boom" || pe.Value != secret {
		t.Fatalf("PanicError = %+v, want type boom and the panic value", pe)
	}
	ce := router.ClientError(err)
	if ce.Code != typed.CodeInternal {
		t.Fatalf("ClientError code %q, want %q", ce.Code, typed.CodeInternal)
	}
	// The client must not learn what the server panicked with.
	if strings.Contains(ce.Message, "hunter2") || strings.Contains(string(router.ErrorEnvelope(ce, nil)), "hunter2") {
		t.Fatalf("client error leaks the panic value: %q", ce.Message)
	}

	// The router stays usable after a panic.
	router.Handle(r, "ok", func(*conn, join) error { return nil })
	if err := r.Dispatch(&conn{}, mustDecode(t, `{"type":"ok"}`)); err != nil {
		t.Fatalf("Dispatch after a panic: %v", err)
	}
}

func TestHandleEnvelopeSeesRawEnvelope(t *testing.T) {
	r := router.NewRouter[*conn]()
	var got *typed.Envelope
	r.HandleEnvelope("relay", func(_ *conn, env *typed.Envelope) error { got = env; return nil })

	in := `{"type":"relay","payload":{"any": [1,"x"]},"id":"q1","room":"r9"}`
	if err := r.Dispatch(&conn{}, mustDecode(t, in)); err != nil {
		t.Fatal(err)
	}
	if got == nil || string(got.Payload) != `{"any": [1,"x"]}` || string(got.ID) != `"q1"` || got.Room != "r9" {
		t.Fatalf("handler saw %+v", got)
	}
}

func TestHasAndReplace(t *testing.T) {
	r := router.NewRouter[*conn]()
	if r.Has("a") {
		t.Fatal("empty router Has(a)")
	}
	c := &conn{}
	router.Handle(r, "a", func(c *conn, _ join) error { c.calls = append(c.calls, "first"); return nil })
	if !r.Has("a") || r.Has("b") {
		t.Fatalf("Has(a)=%v Has(b)=%v, want true false", r.Has("a"), r.Has("b"))
	}
	router.Handle(r, "a", func(c *conn, _ join) error { c.calls = append(c.calls, "second"); return nil })
	if err := r.Dispatch(c, mustDecode(t, `{"type":"a"}`)); err != nil {
		t.Fatal(err)
	}
	if len(c.calls) != 1 || c.calls[0] != "second" {
		t.Fatalf("calls %v, want only the replacing handler", c.calls)
	}
}

func TestRouterConcurrentRegisterAndDispatch(t *testing.T) {
	r := router.NewRouter[*conn]()
	router.Handle(r, "base", func(*conn, join) error { return nil })
	env := mustDecode(t, `{"type":"base","payload":{"room":"x"}}`)

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				router.Handle(r, fmt.Sprintf("t%d-%d", g, i), func(*conn, join) error { return nil })
			}
		})
		wg.Go(func() {
			for range 200 {
				if err := r.Dispatch(&conn{}, env); err != nil {
					t.Errorf("Dispatch: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if !r.Has("t3-199") {
		t.Fatal("a handler registered concurrently is missing")
	}
}

// The path a server takes for each frame: decode, dispatch, and on failure
// answer with an error envelope that carries the request's id.
func TestDispatchErrorBecomesErrorReply(t *testing.T) {
	r := router.NewRouter[*conn]()
	router.Handle(r, "join", func(*conn, join) error { return typed.NewError("room_full", "full") })

	env := mustDecode(t, `{"type":"join","payload":{"room":"a"},"id":"req-1"}`)
	err := r.Dispatch(&conn{}, env)
	if err == nil {
		t.Fatal("Dispatch returned nil for a failing handler")
	}
	reply := router.ErrorEnvelope(router.ClientError(err), env.ID)

	var got struct {
		Type    string          `json:"type"`
		Payload typed.Error     `json:"payload"`
		ID      json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(reply, &got); err != nil {
		t.Fatalf("reply %s: %v", reply, err)
	}
	if got.Type != "error" || got.Payload.Code != "room_full" || got.Payload.Message != "full" || string(got.ID) != `"req-1"` {
		t.Fatalf("reply %s", reply)
	}
}

func TestErrorEnvelopeShape(t *testing.T) {
	for _, id := range []json.RawMessage{json.RawMessage(`7`), json.RawMessage(`"r-1"`), nil} {
		b := router.ErrorEnvelope(typed.NewError("bad_thing", `it "broke"`), id)

		var top map[string]json.RawMessage
		if err := json.Unmarshal(b, &top); err != nil {
			t.Fatalf("error envelope %s is not a JSON object: %v", b, err)
		}
		wantKeys := []string{"payload", "type"}
		if id != nil {
			wantKeys = append(wantKeys, "id")
		}
		if got := sortedKeys(top); !slices.Equal(got, sorted(wantKeys)) {
			t.Fatalf("top-level keys %q, want %q", got, sorted(wantKeys))
		}
		if string(top["type"]) != `"error"` {
			t.Fatalf("type = %s, want \"error\"", top["type"])
		}
		if id != nil && string(top["id"]) != string(id) {
			t.Fatalf("id = %s, want %s", top["id"], id)
		}
		var payload map[string]string
		if err := json.Unmarshal(top["payload"], &payload); err != nil {
			t.Fatalf("payload %s: %v", top["payload"], err)
		}
		if len(payload) != 2 || payload["code"] != "bad_thing" || payload["message"] != `it "broke"` {
			t.Fatalf("payload = %v, want exactly code and message", payload)
		}
	}

	if got := string(router.ErrorEnvelope(typed.NewError("x", "y"), json.RawMessage(`3`))); got != `{"type":"error","payload":{"code":"x","message":"y"},"id":3}` {
		t.Fatalf("ErrorEnvelope = %s", got)
	}
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return sorted(keys)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestAsError(t *testing.T) {
	own := typed.NewError("quota", "too many")
	if got := router.AsError(own); got != own {
		t.Fatalf("AsError(*Error) = %v, want the same *Error", got)
	}
	wrapped := fmt.Errorf("saving: %w", own)
	if got := router.AsError(wrapped); got != own {
		t.Fatalf("AsError(wrapped *Error) = %v, want the inner *Error", got)
	}
	plain := errors.New("disk full")
	got := router.AsError(plain)
	if got.Code != typed.CodeHandlerError || got.Message != "disk full" {
		t.Fatalf("AsError(plain) = %+v, want %s with the error's text", got, typed.CodeHandlerError)
	}
}
