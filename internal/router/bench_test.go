package router_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/router"
	"github.com/troupehq/troupe/typed"
)

var benchEnvelope = []byte(`{"type":"room.publish","id":42,"payload":{"room":"lobby","body":"0:17:1732900000000000000:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}`)

func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := typed.Decode(benchEnvelope); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	payload := struct {
		Room string `json:"room"`
		Body string `json:"body"`
	}{"lobby", "0:17:1732900000000000000:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := typed.Encode("room.message", payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDispatch(b *testing.B) {
	type publish struct {
		Room string `json:"room"`
		Body string `json:"body"`
	}
	r := router.NewRouter[struct{}]()
	router.Handle(r, "room.publish", func(struct{}, publish) error { return nil })
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		env, err := typed.Decode(benchEnvelope)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Dispatch(struct{}{}, env); err != nil {
			b.Fatal(err)
		}
	}
}
