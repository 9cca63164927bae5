package typed_test

import (
	"encoding/json"
	"fmt"

	"github.com/troupehq/troupe/typed"
)

// Handlers receive the application's per-message context (here a reply
// collector) and the payload decoded into their own type. Dispatch errors
// become error envelopes that echo the request id.
func ExampleHandle() {
	type Greet struct {
		Name string `json:"name"`
	}
	type replies struct{ out [][]byte }

	r := typed.NewRouter[*replies]()
	typed.Handle(r, "greet", func(c *replies, msg Greet) error {
		if msg.Name == "" {
			return typed.NewError(typed.CodeBadRequest, "name is required")
		}
		b, err := typed.Encode("greeting", map[string]string{"text": "hello, " + msg.Name})
		if err != nil {
			return err
		}
		c.out = append(c.out, b)
		return nil
	})

	for _, frame := range []string{
		`{"type":"greet","payload":{"name":"Ada"}}`,
		`{"type":"greet","payload":{},"id":2}`,
		`{"type":"shout","id":"x"}`,
		`{"type":"greet","payload":{"name":7},"id":3}`,
	} {
		env, err := typed.Decode([]byte(frame))
		if err != nil {
			fmt.Println(err)
			continue
		}
		c := &replies{}
		if err := r.Dispatch(c, env); err != nil {
			e := typed.ClientError(err)
			if e.Code == typed.CodeInvalidPayload {
				// The message quotes encoding/json; show only the code.
				fmt.Println("error", e.Code, "for id", string(env.ID))
				continue
			}
			fmt.Println(string(typed.ErrorEnvelope(e, env.ID)))
			continue
		}
		for _, b := range c.out {
			fmt.Println(string(b))
		}
	}
	// Output:
	// {"type":"greeting","payload":{"text":"hello, Ada"}}
	// {"type":"error","payload":{"code":"bad_request","message":"name is required"},"id":2}
	// {"type":"error","payload":{"code":"unknown_type","message":"no handler for type \"shout\""},"id":"x"}
	// error invalid_payload for id 3
}

// Encode marshals the payload; JSON that is already encoded is used as it
// is, and a reply carries the request's id exactly as the client wrote it.
func ExampleEncode() {
	a, _ := typed.Encode("chat", map[string]string{"text": "hi"})
	fmt.Println(string(a))

	b, _ := typed.Encode("cached", json.RawMessage(`{"n": 1}`))
	fmt.Println(string(b))

	req, _ := typed.Decode([]byte(`{"type":"ping","id":"abc"}`))
	c, _ := typed.EncodeWithID("pong", nil, req.ID)
	fmt.Println(string(c))
	// Output:
	// {"type":"chat","payload":{"text":"hi"}}
	// {"type":"cached","payload":{"n": 1}}
	// {"type":"pong","id":"abc"}
}
