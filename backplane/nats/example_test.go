package nats_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/troupehq/troupe/backplane/nats"
	"github.com/troupehq/troupe/rooms"
)

// A node that runs its own nats-server. In production each node would set
// ServerOptions.ClusterPort and Routes to the others, and a StoreDir.
func Example() {
	dir, _ := os.MkdirTemp("", "troupe-example-")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	bp, err := nats.Open(ctx, nats.Options{
		Embedded: &nats.ServerOptions{Name: "node-1", NoListen: true, StoreDir: dir},
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bp.Close()

	// Two messages in one append: they get consecutive numbers.
	texts := []string{"hello", "world"}
	first, err := bp.Publish(ctx, "lobby", len(texts), func(first uint64) [][]byte {
		out := make([][]byte, len(texts))
		for i, text := range texts {
			out[i] = fmt.Appendf(nil, `{"seq":%d,"text":%q}`, first+uint64(i), text)
		}
		return out
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("published", first, "and", first+1)

	live := make(chan rooms.Entry, 1)
	feed, err := bp.Follow(ctx, "lobby", func(e rooms.Entry) { live <- e })
	if err != nil {
		fmt.Println(err)
		return
	}
	defer feed.Stop()
	for _, e := range feed.Backlog {
		fmt.Printf("backlog %d %s\n", e.Seq, e.Payload)
	}
	bp.Publish(ctx, "lobby", 1, func(seq uint64) [][]byte {
		return [][]byte{fmt.Appendf(nil, `{"seq":%d,"text":"again"}`, seq)}
	})
	e := <-live
	fmt.Printf("live %d %s\n", e.Seq, e.Payload)
	// Output:
	// published 1 and 2
	// backlog 1 {"seq":1,"text":"hello"}
	// backlog 2 {"seq":2,"text":"world"}
	// live 3 {"seq":3,"text":"again"}
}
