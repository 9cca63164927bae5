// Command baseline is the reference server that Troupe's benchmarks are
// quoted against: a plain coder/websocket server with a mutex-protected room
// map and one writer goroutine per connection, implementing the same wire
// protocol as examples/benchserver. It is what a careful hand-written hub
// looks like, and it is deliberately not tuned.
//
//	go run ./bench/baseline -addr 127.0.0.1:9100
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"sync"
	"syscall"

	"github.com/coder/websocket"
)

type envelope struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

type roomPayload struct {
	Room string          `json:"room"`
	Body json.RawMessage `json:"body,omitempty"`
}

type client struct {
	out  chan []byte
	conn *websocket.Conn
}

type hub struct {
	mu    sync.Mutex
	rooms map[string]map[*client]struct{}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9100", "listen address")
	flag.Parse()
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	h := &hub{rooms: make(map[string]map[*client]struct{})}
	http.HandleFunc("/ws", h.serve)
	log.Printf("baseline: ws://%s/ws", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}

func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	conn.SetReadLimit(65536)
	c := &client{out: make(chan []byte, 256), conn: conn}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the writer
		for {
			select {
			case b := <-c.out:
				if conn.Write(ctx, websocket.MessageText, b) != nil {
					conn.CloseNow()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	joined := map[string]bool{}
	defer func() {
		h.mu.Lock()
		for room := range joined {
			delete(h.rooms[room], c)
		}
		h.mu.Unlock()
		conn.CloseNow()
	}()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return
		}
		var env envelope
		if json.Unmarshal(data, &env) != nil {
			c.send([]byte(`{"type":"error","payload":{"message":"invalid json"}}`))
			continue
		}
		var p roomPayload
		switch env.Type {
		case "bench.echo":
			b, _ := json.Marshal(envelope{Type: "bench.echo", Payload: env.Payload})
			c.send(b)
		case "room.join":
			if json.Unmarshal(env.Payload, &p) != nil {
				continue
			}
			h.mu.Lock()
			if h.rooms[p.Room] == nil {
				h.rooms[p.Room] = make(map[*client]struct{})
			}
			h.rooms[p.Room][c] = struct{}{}
			h.mu.Unlock()
			joined[p.Room] = true
			b, _ := json.Marshal(map[string]any{"type": "room.joined", "payload": map[string]string{"room": p.Room}})
			c.send(b)
		case "room.leave":
			if json.Unmarshal(env.Payload, &p) != nil {
				continue
			}
			h.mu.Lock()
			delete(h.rooms[p.Room], c)
			h.mu.Unlock()
			delete(joined, p.Room)
			b, _ := json.Marshal(map[string]any{"type": "room.left", "payload": map[string]string{"room": p.Room}})
			c.send(b)
		case "room.publish":
			if json.Unmarshal(env.Payload, &p) != nil {
				continue
			}
			b, _ := json.Marshal(map[string]any{"type": "room.message", "payload": p})
			h.mu.Lock()
			for m := range h.rooms[p.Room] {
				m.send(b)
			}
			h.mu.Unlock()
		default:
			c.send([]byte(`{"type":"error","payload":{"message":"unknown type"}}`))
		}
	}
}

// send queues b, closing a client whose queue is full (slow consumer).
func (c *client) send(b []byte) {
	select {
	case c.out <- b:
	default:
		go c.conn.Close(websocket.StatusTryAgainLater, "slow consumer")
	}
}
