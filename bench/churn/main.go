// Command churn is a hostile client of the room protocol, for measuring
// what clients can make a server keep: each of -n connections loops
// room.join of a room it never used, -publishes room.publish of a -body
// byte body, room.leave, as fast as it can (or at -rate messages per
// second), for -d. It reads and discards everything the server sends, and
// reconnects when the server closes it. Meanwhile, and for -after once the
// clients are gone, it samples the server's resident memory (VmRSS of
// /proc/-pid/status) every second and, with -metrics, the Go heap and the
// room gauges from the server's Prometheus endpoint.
//
//	churn -url ws://127.0.0.1:9000/ws -pid $(pgrep -n benchserver) \
//	      -metrics http://127.0.0.1:9000/metrics -n 50 -d 60s
//
// -shape chat wraps the body as the chat example wants it,
// {"text":"xxx…"}; the default sends a JSON string.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

type counters struct {
	rooms, published, pubBytes, received, reconnects, refused atomic.Int64
	closes                                                    sync.Map // close code -> *atomic.Int64
}

func main() {
	url := flag.String("url", "ws://127.0.0.1:9000/ws", "server WebSocket URL")
	n := flag.Int("n", 1, "clients")
	dur := flag.Duration("d", 20*time.Second, "how long the clients churn")
	after := flag.Duration("after", 20*time.Second, "how long to keep sampling once the clients are gone")
	pubs := flag.Int("publishes", 16, "room.publish per room")
	bodySize := flag.Int("body", 60000, "body bytes per publish")
	shape := flag.String("shape", "string", `body shape: "string" (a JSON string) or "chat" ({"text":…})`)
	rate := flag.Float64("rate", 0, "messages per second per client (0: as fast as possible)")
	pid := flag.Int("pid", 0, "server process whose VmRSS to sample (0: none)")
	metricsURL := flag.String("metrics", "", "server's Prometheus endpoint (optional)")
	maxRSS := flag.Int64("max-rss", 12<<30, "stop the clients early if the server's RSS passes this many bytes")
	flag.Parse()

	var body []byte
	switch *shape {
	case "string":
		body, _ = json.Marshal(strings.Repeat("x", *bodySize))
	case "chat":
		body, _ = json.Marshal(map[string]string{"text": strings.Repeat("x", *bodySize)})
	default:
		log.Fatalf("churn: unknown -shape %q", *shape)
	}

	var c counters
	start := time.Now()
	sample := func(phase string) (rss int64) {
		rss = vmRSS(*pid)
		m := scrape(*metricsURL)
		fmt.Printf("%6.1f %-5s rss=%7.1fMiB heap_inuse=%7.1fMiB heap_sys=%7.1fMiB history=%7.1fMiB dormant=%6.0f rooms=%d published=%dMiB closes=%s\n",
			time.Since(start).Seconds(), phase, mib(rss), mib(int64(m["go_memstats_heap_inuse_bytes"])),
			mib(int64(m["go_memstats_heap_sys_bytes"])), mib(int64(m["troupe_history_retained_bytes"])),
			m["troupe_rooms_dormant"], c.rooms.Load(), c.pubBytes.Load()>>20, closes(&c))
		return rss
	}
	base := sample("base")

	ctx, stop := context.WithTimeout(context.Background(), *dur)
	var wg sync.WaitGroup
	for i := range *n {
		wg.Add(1)
		go func() { defer wg.Done(); client(ctx, *url, i, *pubs, body, *rate, &c) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var peak, endLoad int64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
load:
	for {
		select {
		case <-done:
			break load
		case <-tick.C:
			rss := sample("load")
			peak = max(peak, rss)
			if *pid > 0 && rss > *maxRSS {
				fmt.Printf("server RSS passed %d MiB: stopping the clients\n", *maxRSS>>20)
				stop()
			}
		}
	}
	stop()
	loadSecs := time.Since(start).Seconds()
	endLoad = sample("left")
	peak = max(peak, endLoad)
	var last int64
	for deadline := time.Now().Add(*after); time.Now().Before(deadline); {
		<-tick.C
		last = sample("after")
		peak = max(peak, last)
	}
	m := scrape(*metricsURL)
	fmt.Printf("summary: clients=%d load=%.0fs rooms=%d published=%dMiB (%.1f MiB/s) reconnects=%d refused=%d closes=%s\n",
		*n, loadSecs, c.rooms.Load(), c.pubBytes.Load()>>20, mib(c.pubBytes.Load())/loadSecs,
		c.reconnects.Load(), c.refused.Load(), closes(&c))
	fmt.Printf("summary: rss base=%.0fMiB peak=%.0fMiB clients-left=%.0fMiB after-%s=%.0fMiB history=%.1fMiB dormant=%.0f evicted-budget=%.0f evicted-limit=%.0f trims=%.0f\n",
		mib(base), mib(peak), mib(endLoad), *after, mib(last), mib(int64(m["troupe_history_retained_bytes"])),
		m["troupe_rooms_dormant"], m[`troupe_rooms_evicted_total{reason="budget"}`],
		m[`troupe_rooms_evicted_total{reason="limit"}`], m["troupe_history_trims_total"])
}

// client churns rooms on one connection until ctx ends, reconnecting when
// the server closes it.
func client(ctx context.Context, url string, id, pubs int, body []byte, rate float64, c *counters) {
	var gap time.Duration
	if rate > 0 {
		gap = time.Duration(float64(time.Second) / rate)
	}
	next := time.Now()
	pace := func() {
		if gap == 0 {
			return
		}
		next = next.Add(gap)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else {
			next = time.Now()
		}
	}
	seq := 0
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			c.reconnects.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
		conn, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			if ctx.Err() == nil {
				c.refused.Add(1)
			}
			continue
		}
		conn.SetReadLimit(-1)
		// Everything the server sends is read and dropped, so that it is
		// never a slow consumer: the point is what it keeps, not what it
		// queues.
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			for {
				_, r, err := conn.Reader(context.Background())
				if err != nil {
					if code := websocket.CloseStatus(err); code != -1 {
						v, _ := c.closes.LoadOrStore(int(code), new(atomic.Int64))
						v.(*atomic.Int64).Add(1)
					}
					return
				}
				nr, _ := io.Copy(io.Discard, r)
				c.received.Add(nr)
			}
		}()
		send := func(b []byte) bool {
			pace()
			return conn.Write(ctx, websocket.MessageText, b) == nil
		}
		for ok := true; ok && ctx.Err() == nil; {
			seq++
			room, _ := json.Marshal(fmt.Sprintf("churn-%d-%d-%d", id, seq, time.Now().UnixNano()))
			if ok = send(fmt.Appendf(nil, `{"type":"room.join","payload":{"room":%s}}`, room)); !ok {
				break
			}
			c.rooms.Add(1)
			for range pubs {
				msg := fmt.Appendf(nil, `{"type":"room.publish","payload":{"room":%s,"body":%s}}`, room, body)
				if ok = send(msg); !ok {
					break
				}
				c.published.Add(1)
				c.pubBytes.Add(int64(len(body)))
			}
			if ok {
				ok = send(fmt.Appendf(nil, `{"type":"room.leave","payload":{"room":%s}}`, room))
			}
		}
		conn.Close(websocket.StatusNormalClosure, "")
		<-readDone
	}
}

func closes(c *counters) string {
	var parts []string
	c.closes.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%d:%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// vmRSS reads the resident set of process pid, in bytes (0 if unknown).
func vmRSS(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// scrape reads the unlabelled samples of a Prometheus text endpoint (and
// the labelled ones, under their full name), or nothing.
func scrape(url string) map[string]float64 {
	out := map[string]float64{}
	if url == "" {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		log.Printf("churn: reading %s: %v", url, err)
	}
	return out
}
