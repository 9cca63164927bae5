// Command sseload measures Troupe's two transports side by side with one
// load generator: the same scenario, the same clients and the same
// counting, over WebSocket (coder/websocket, one envelope per frame) or
// over the HTTP fallback (an event stream per client, envelopes POSTed, as
// many per POST as are ready). It speaks the bench protocol that
// examples/benchserver serves (bench.echo, room.join, room.publish).
//
//	sseload -url ws://127.0.0.1:9000/ws -transport sse echo -conns 50 -window 8
//	sseload -url ws://127.0.0.1:9000/ws -transport websocket fanout -rooms 10 -members 50
//
// echo: every connection keeps -window bench.echo envelopes in flight; the
// figure is echoes per second. fanout: -rooms rooms of -members members,
// one of which publishes with -window messages in flight (counted back
// from its own copies); the figure is deliveries per second to all
// members. It prints one line of JSON.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

func main() {
	rawURL := flag.String("url", "ws://127.0.0.1:9000/ws", "the server's WebSocket URL")
	transport := flag.String("transport", "websocket", "websocket or sse")
	duration := flag.Duration("duration", 5*time.Second, "measured time")
	flag.Parse()
	if flag.NArg() < 1 {
		log.Fatal("usage: sseload [flags] echo|fanout [scenario flags]")
	}
	dial := dialer(*transport, *rawURL)
	var res result
	switch scenario, args := flag.Arg(0), flag.Args()[1:]; scenario {
	case "echo":
		fs := flag.NewFlagSet("echo", flag.ExitOnError)
		conns := fs.Int("conns", 50, "connections")
		window := fs.Int("window", 8, "echoes in flight per connection")
		size := fs.Int("size", 64, "payload bytes")
		_ = fs.Parse(args)
		res = echo(dial, *conns, *window, *size, *duration)
	case "fanout":
		fs := flag.NewFlagSet("fanout", flag.ExitOnError)
		rooms := fs.Int("rooms", 10, "rooms")
		members := fs.Int("members", 50, "members per room, the publisher included")
		window := fs.Int("window", 16, "publishes in flight per room")
		size := fs.Int("size", 128, "body bytes")
		_ = fs.Parse(args)
		res = fanout(dial, *rooms, *members, *window, *size, *duration)
	default:
		log.Fatalf("unknown scenario %q", scenario)
	}
	res.Transport = *transport
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

type result struct {
	Scenario  string  `json:"scenario"`
	Transport string  `json:"transport"`
	Seconds   float64 `json:"seconds"`
	Messages  uint64  `json:"messages"`
	PerSecond float64 `json:"per_second"`
}

// conn is one client connection: send queues envelopes (together where
// the transport can), read returns the next envelope.
type conn interface {
	send(envs [][]byte) error
	read() ([]byte, error)
	close()
}

func dialer(transport, rawURL string) func() (conn, error) {
	switch transport {
	case "websocket":
		return func() (conn, error) {
			ws, _, err := websocket.Dial(context.Background(), rawURL, nil)
			if err != nil {
				return nil, err
			}
			ws.SetReadLimit(-1)
			return &wsConn{ws: ws}, nil
		}
	case "sse":
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000, MaxConnsPerHost: 0}}
		base := strings.Replace(strings.Replace(rawURL, "wss://", "https://", 1), "ws://", "http://", 1)
		return func() (conn, error) { return dialSSE(hc, base) }
	}
	log.Fatalf("unknown transport %q", transport)
	return nil
}

type wsConn struct{ ws *websocket.Conn }

func (c *wsConn) send(envs [][]byte) error {
	for _, e := range envs {
		if err := c.ws.Write(context.Background(), websocket.MessageText, e); err != nil {
			return err
		}
	}
	return nil
}

func (c *wsConn) read() ([]byte, error) {
	_, b, err := c.ws.Read(context.Background())
	return b, err
}

func (c *wsConn) close() { _ = c.ws.CloseNow() }

type sseConn struct {
	hc   *http.Client
	post string
	body io.ReadCloser
	br   *bufio.Reader
}

func dialSSE(hc *http.Client, base string) (*sseConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("sse", "open")
	u.RawQuery = q.Encode()
	resp, err := hc.Get(u.String())
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return nil, errors.New("open: " + resp.Status)
	}
	c := &sseConn{hc: hc, body: resp.Body, br: bufio.NewReaderSize(resp.Body, 64<<10)}
	token, err := c.read()
	if err != nil {
		return nil, err
	}
	q.Set("sse", string(token))
	u.RawQuery = q.Encode()
	c.post = u.String()
	return c, nil
}

func (c *sseConn) send(envs [][]byte) error {
	resp, err := c.hc.Post(c.post, "text/plain", bytes.NewReader(bytes.Join(envs, []byte{'\n'})))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return errors.New("POST: " + resp.Status)
	}
	return nil
}

// read returns the data of the next event (the session's token first).
func (c *sseConn) read() ([]byte, error) {
	var data []byte
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		line = line[:len(line)-1]
		switch {
		case len(line) == 0:
			if data != nil {
				return data, nil
			}
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append([]byte(nil), line[6:]...)
		}
	}
}

func (c *sseConn) close() { _ = c.body.Close() }

// pump sends what the credits allow, batching what is ready.
func pump(c conn, credits <-chan struct{}, make func() []byte, stop <-chan struct{}) {
	for {
		select {
		case <-credits:
		case <-stop:
			return
		}
		envs := [][]byte{make()}
	more:
		for {
			select {
			case <-credits:
				envs = append(envs, make())
			default:
				break more
			}
		}
		if err := c.send(envs); err != nil {
			return
		}
	}
}

func connectAll(dial func() (conn, error), n int) []conn {
	conns := make([]conn, n)
	for i := range conns {
		c, err := dial()
		if err != nil {
			log.Fatalf("connection %d: %v", i, err)
		}
		conns[i] = c
	}
	return conns
}

func echo(dial func() (conn, error), n, window, size int, d time.Duration) result {
	conns := connectAll(dial, n)
	payload, _ := json.Marshal(strings.Repeat("x", size))
	env := []byte(`{"type":"bench.echo","payload":` + string(payload) + `}`)
	var count atomic.Uint64
	var counting atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range conns {
		credits := make(chan struct{}, window)
		for range window {
			credits <- struct{}{}
		}
		wg.Go(func() { pump(c, credits, func() []byte { return env }, stop) })
		wg.Go(func() {
			for {
				b, err := c.read()
				if err != nil {
					return
				}
				if bytes.Contains(b, []byte(`"bench.echo"`)) {
					if counting.Load() {
						count.Add(1)
					}
					credits <- struct{}{}
				}
			}
		})
	}
	return measure("echo", d, &count, &counting, stop, conns, &wg)
}

func measure(name string, d time.Duration, count *atomic.Uint64, counting *atomic.Bool, stop chan struct{}, conns []conn, wg *sync.WaitGroup) result {
	time.Sleep(time.Second) // warm up
	counting.Store(true)
	start := time.Now()
	time.Sleep(d)
	counting.Store(false)
	el := time.Since(start).Seconds()
	close(stop)
	for _, c := range conns {
		c.close()
	}
	wg.Wait()
	n := count.Load()
	return result{Scenario: name, Seconds: el, Messages: n, PerSecond: float64(n) / el}
}

func fanout(dial func() (conn, error), rooms, members, window, size int, d time.Duration) result {
	conns := connectAll(dial, rooms*members)
	var count atomic.Uint64
	var counting atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	body, _ := json.Marshal(strings.Repeat("x", size))
	var starts []func()
	for r := range rooms {
		room := fmt.Sprintf("fan-%d", r)
		join := []byte(`{"type":"room.join","payload":{"room":"` + room + `"}}`)
		pub := []byte(`{"type":"room.publish","payload":{"room":"` + room + `","body":` + string(body) + `}}`)
		var joined sync.WaitGroup
		for m := range members {
			c := conns[r*members+m]
			if err := c.send([][]byte{join}); err != nil {
				log.Fatal(err)
			}
			joined.Add(1)
			var credits chan struct{}
			if m == 0 {
				credits = make(chan struct{}, window)
			}
			wg.Go(func() {
				seen := false
				for {
					b, err := c.read()
					if err != nil {
						return
					}
					switch {
					case !seen && bytes.Contains(b, []byte(`"room.joined"`)):
						seen = true
						joined.Done()
					case bytes.Contains(b, []byte(`"room.message"`)):
						if counting.Load() {
							count.Add(1)
						}
						if credits != nil {
							credits <- struct{}{}
						}
					}
				}
			})
			if m == 0 {
				starts = append(starts, func() {
					for range window {
						credits <- struct{}{}
					}
					wg.Go(func() { pump(c, credits, func() []byte { return pub }, stop) })
				})
			}
		}
		joined.Wait()
	}
	// The publishers start once every room has all its members.
	for _, start := range starts {
		start()
	}
	return measure("fanout", d, &count, &counting, stop, conns, &wg)
}
