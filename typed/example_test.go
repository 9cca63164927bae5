package typed_test

import (
	"errors"
	"fmt"

	"github.com/troupehq/troupe/typed"
)

// A codec round trip: what a client sends is decoded into an Envelope whose
// payload stays raw JSON until a handler decodes it into its own type.
func Example() {
	env, err := typed.Decode([]byte(`{"type":"greet","id":7,"payload":{"name":"Ada"}}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(env.Type, string(env.ID), string(env.Payload))

	out, _ := typed.Encode("greeting", map[string]string{"text": "hello, Ada"})
	fmt.Println(string(out))

	_, err = typed.Decode([]byte(`not json`))
	fmt.Println(errors.Is(err, typed.ErrNotEnvelope))
	// Output:
	// greet 7 {"name":"Ada"}
	// {"type":"greeting","payload":{"text":"hello, Ada"}}
	// true
}

// A handler chooses what the client is told by returning an *Error.
func ExampleError() {
	err := fmt.Errorf("saving bid: %w", typed.NewError("too_low", "bid below the current price"))
	var e *typed.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, "-", e.Message)
	}
	// Output: too_low - bid below the current price
}
