// Command floor is the least server that answers the bench protocol's
// room.join and bench.echo on net/http and coder/websocket: it upgrades,
// then replies to each frame from the connection's own goroutine, and keeps
// nothing (no rooms, no members, no writer of its own). It is not a server
// anyone should run; it measures what the two libraries cost used plainly
// with nothing on top, so that a connection's cost in a real server on
// them (Troupe, bench/baseline) can be split into theirs and the server's
// (BENCHMARKS.md, "The floor under connect + join").
//
//	ulimit -n 20000   # for thousands of connections (bench/floor.sh does it)
//	go run ./bench/floor -addr 127.0.0.1:9200
//
// room.join gets room.joined and room.leave room.left, with nothing behind
// them; room.publish gets an error reply, since there are no rooms to
// publish to.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net/http"

	"github.com/coder/websocket"
)

type envelope struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9200", "listen address")
	flag.Parse()
	http.HandleFunc("/ws", serve)
	log.Printf("floor: ws://%s/ws", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}

func serve(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(65536)
	ctx := context.Background()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return
		}
		if err := conn.Write(ctx, websocket.MessageText, reply(data)); err != nil {
			return
		}
	}
}

// reply is the one frame that answers data.
func reply(data []byte) []byte {
	var env envelope
	if json.Unmarshal(data, &env) != nil {
		return []byte(`{"type":"error","payload":{"message":"invalid json"}}`)
	}
	var p struct {
		Room string `json:"room"`
	}
	switch env.Type {
	case "bench.echo":
		b, _ := json.Marshal(envelope{Type: "bench.echo", Payload: env.Payload})
		return b
	case "room.join", "room.leave":
		if json.Unmarshal(env.Payload, &p) != nil {
			return []byte(`{"type":"error","payload":{"message":"invalid payload"}}`)
		}
		typ := "room.joined"
		if env.Type == "room.leave" {
			typ = "room.left"
		}
		b, _ := json.Marshal(map[string]any{"type": typ, "payload": map[string]string{"room": p.Room}})
		return b
	default:
		return []byte(`{"type":"error","payload":{"message":"the floor server keeps no rooms"}}`)
	}
}
