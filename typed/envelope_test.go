package typed_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/troupehq/troupe/typed"
)

func TestDecodeValidEnvelopes(t *testing.T) {
	tests := []struct {
		name                   string
		in                     string
		typ, payload, id, room string
	}{
		{
			name:    "nested payload kept byte for byte",
			in:      `{"type":"chat","payload":{ "text" : "hi",  "n":[1, 2.50, {"a":null}], "u":"\u00e9"},"room":"lobby"}`,
			typ:     "chat",
			payload: `{ "text" : "hi",  "n":[1, 2.50, {"a":null}], "u":"\u00e9"}`,
			room:    "lobby",
		},
		{
			name: "numeric id",
			in:   `{"type":"ping","id":42}`,
			typ:  "ping", id: `42`,
		},
		{
			name: "numeric id beyond float precision kept as written",
			in:   `{"type":"ping","id":12345678901234567890123}`,
			typ:  "ping", id: `12345678901234567890123`,
		},
		{
			name: "fractional and exponent id",
			in:   `{"type":"ping","id":-1.5e3}`,
			typ:  "ping", id: `-1.5e3`,
		},
		{
			name: "string id",
			in:   `{"id":"req-7","type":"ping"}`,
			typ:  "ping", id: `"req-7"`,
		},
		{
			name:    "scalar and array payloads",
			in:      `{"type":"nums","payload":[1,2,3]}`,
			typ:     "nums",
			payload: `[1,2,3]`,
		},
		{
			name: "surrounding white space and unknown fields",
			in:   " \n{\"type\":\"x\",\"extra\":{\"ignored\":true}}\t",
			typ:  "x",
		},
		{
			name: "escaped type",
			in:   `{"type":"a\"b\\c\u2603"}`,
			typ:  "a\"b\\c☃",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := typed.Decode([]byte(tt.in))
			if err != nil {
				t.Fatalf("Decode(%s): %v", tt.in, err)
			}
			if env.Type != tt.typ {
				t.Errorf("Type = %q, want %q", env.Type, tt.typ)
			}
			if string(env.Payload) != tt.payload {
				t.Errorf("Payload = %s, want %s", env.Payload, tt.payload)
			}
			if string(env.ID) != tt.id {
				t.Errorf("ID = %s, want %s", env.ID, tt.id)
			}
			if env.Room != tt.room {
				t.Errorf("Room = %q, want %q", env.Room, tt.room)
			}
		})
	}
}

func TestDecodeRejectsNonEnvelopes(t *testing.T) {
	tests := map[string]string{
		"empty input":        ``,
		"not JSON":           `hello`,
		"truncated":          `{"type":"chat","payload":{`,
		"array":              `[{"type":"chat"}]`,
		"string":             `"chat"`,
		"null":               `null`,
		"missing type":       `{"payload":{}}`,
		"empty type":         `{"type":""}`,
		"numeric type":       `{"type":5}`,
		"object type":        `{"type":{"name":"chat"}}`,
		"boolean id":         `{"type":"chat","id":true}`,
		"object id":          `{"type":"chat","id":{"n":1}}`,
		"array id":           `{"type":"chat","id":[1]}`,
		"trailing garbage":   `{"type":"chat"} {"type":"more"}`,
		"room of wrong kind": `{"type":"chat","room":1}`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			env, err := typed.Decode([]byte(in))
			if err == nil {
				t.Fatalf("Decode(%s) = %+v, want an error", in, env)
			}
			if !errors.Is(err, typed.ErrNotEnvelope) {
				t.Fatalf("Decode(%s) error %v does not wrap ErrNotEnvelope", in, err)
			}
			if env != nil {
				t.Fatalf("Decode(%s) returned an envelope with its error", in)
			}
		})
	}
}

func TestDecodeNullIDIsNotEchoed(t *testing.T) {
	env, err := typed.Decode([]byte(`{"type":"ping","id":null}`))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	reply, err := typed.EncodeWithID("pong", nil, env.ID)
	if err != nil {
		t.Fatalf("EncodeWithID: %v", err)
	}
	if string(reply) != `{"type":"pong"}` {
		t.Fatalf("reply to a null id = %s, want no id", reply)
	}
}

type chat struct {
	Text string   `json:"text"`
	Tags []string `json:"tags,omitempty"`
	N    int      `json:"n"`
}

func TestEncodeRoundTrip(t *testing.T) {
	in := chat{Text: "héllo \"world\"\n", Tags: []string{"a", "b"}, N: 3}
	ids := []json.RawMessage{nil, json.RawMessage(`17`), json.RawMessage(`"abc"`), json.RawMessage(`9007199254740993`)}
	for _, id := range ids {
		b, err := typed.EncodeWithID("chat", in, id)
		if err != nil {
			t.Fatalf("EncodeWithID(id %s): %v", id, err)
		}
		env, err := typed.Decode(b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", b, err)
		}
		if env.Type != "chat" {
			t.Errorf("Type = %q, want chat", env.Type)
		}
		if string(env.ID) != string(id) {
			t.Errorf("ID = %s, want %s", env.ID, id)
		}
		var out chat
		if err := json.Unmarshal(env.Payload, &out); err != nil {
			t.Fatalf("payload %s: %v", env.Payload, err)
		}
		if !reflect.DeepEqual(out, in) {
			t.Errorf("payload decoded to %+v, want %+v", out, in)
		}
	}

	b, err := typed.Encode("chat", in)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	withNil, err := typed.EncodeWithID("chat", in, nil)
	if err != nil {
		t.Fatalf("EncodeWithID: %v", err)
	}
	if string(b) != string(withNil) {
		t.Fatalf("Encode = %s, EncodeWithID without id = %s; want the same", b, withNil)
	}
}

func TestEncodeShape(t *testing.T) {
	tests := []struct {
		name    string
		typ     string
		payload any
		id      json.RawMessage
		want    string
	}{
		{"no payload", "ping", nil, nil, `{"type":"ping"}`},
		{"struct payload", "chat", chat{Text: "hi"}, nil, `{"type":"chat","payload":{"text":"hi","n":0}}`},
		{"numeric id", "pong", nil, json.RawMessage(`5`), `{"type":"pong","id":5}`},
		{"string id", "pong", map[string]int{"n": 1}, json.RawMessage(`"x"`), `{"type":"pong","payload":{"n":1},"id":"x"}`},
		{"raw message verbatim", "raw", json.RawMessage(`{ "kept" :  [1, 2] }`), nil, `{"type":"raw","payload":{ "kept" :  [1, 2] }}`},
		{"byte slice verbatim", "raw", []byte(`[true,  null]`), nil, `{"type":"raw","payload":[true,  null]}`},
		{"raw scalar", "raw", json.RawMessage(`"s"`), nil, `{"type":"raw","payload":"s"}`},
		{"empty raw message leaves payload out", "raw", json.RawMessage(``), nil, `{"type":"raw"}`},
		{"nil byte slice leaves payload out", "raw", []byte(nil), json.RawMessage(`1`), `{"type":"raw","id":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := typed.EncodeWithID(tt.typ, tt.payload, tt.id)
			if err != nil {
				t.Fatalf("EncodeWithID: %v", err)
			}
			if string(b) != tt.want {
				t.Fatalf("got  %s\nwant %s", b, tt.want)
			}
		})
	}
}

func TestEncodeRejectsInvalidPayloads(t *testing.T) {
	tests := map[string]any{
		"invalid raw message": json.RawMessage(`{"a":`),
		"invalid byte slice":  []byte(`not json`),
		"unmarshalable value": make(chan int),
		"unsupported float":   map[string]float64{"x": nan()},
	}
	for name, payload := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := typed.Encode("t", payload)
			if err == nil {
				t.Fatalf("Encode(%s) = %s, want an error", name, b)
			}
			if b != nil {
				t.Fatalf("Encode returned %s with its error", b)
			}
		})
	}
}

func nan() float64 {
	var zero float64
	return zero / zero
}

func TestEncodeEscapesType(t *testing.T) {
	types := []string{
		`say "hi"`,
		`back\slash`,
		"tab\there\nnewline",
		"nul\x00and\x1fcontrol",
		"naïve ☃ 日本",
		"</script><b>",
		"emoji 🎉",
		"plain",
	}
	for _, typ := range types {
		b, err := typed.EncodeWithID(typ, map[string]string{"k": "v"}, json.RawMessage(`1`))
		if err != nil {
			t.Fatalf("Encode(%q): %v", typ, err)
		}
		if !json.Valid(b) {
			t.Fatalf("Encode(%q) = %s, not valid JSON", typ, b)
		}
		env, err := typed.Decode(b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", b, err)
		}
		if env.Type != typ {
			t.Fatalf("type %q came back as %q", typ, env.Type)
		}
		if string(env.Payload) != `{"k":"v"}` || string(env.ID) != `1` {
			t.Fatalf("type %q disturbed the rest of the envelope: %s", typ, b)
		}
	}
}

func TestErrorText(t *testing.T) {
	e := typed.NewError(typed.CodeBadRequest, `field "age": -1`)
	if !strings.Contains(e.Error(), typed.CodeBadRequest) || !strings.Contains(e.Error(), `field "age": -1`) {
		t.Fatalf("Error() = %q, want code and message", e.Error())
	}
}
