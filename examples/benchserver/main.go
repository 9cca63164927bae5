// Command benchserver implements the load generator's wire protocol
// (bench.echo, room.join, room.leave, room.publish) with Troupe's public API
// only, so that wsload measures what a user's server would get: the room
// messages are Troupe's built-in room protocol (sequence numbers, history,
// presence), bench.echo is one typed handler.
//
//	go run ./examples/benchserver -addr 127.0.0.1:9000
//
// For many connections raise the open-files limit first (ulimit -n 200000);
// the server also raises its own soft limit to the hard limit.
//
// Settings come from the environment (troupe.ConfigFromEnv: WEBSOCKET_*
// for connections, TROUPE_* for the rooms' history bounds); /metrics
// serves Troupe's collector and the Go runtime's, for the memory
// measurements of bench/churn.
//
// With the cluster flags of nats.Flags (-cluster, -routes, -nats, ...) it
// is one node of several whose rooms live in NATS JetStream, as the chat
// example's nodes are; bench/cluster.sh measures three such nodes against
// one.
//
// With -plain it has no rooms: a typed handler answers room.join with
// room.joined and joins nothing, so that bench/floor.sh can tell the cost
// of Troupe's connections and sessions from that of its rooms.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/backplane/nats"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file until the server stops")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address (for example 127.0.0.1:6060)")
	memRate := flag.Int("memprofilerate", 0, "set runtime.MemProfileRate (1 records every allocation, for exact heap profiles from -pprof); 0 leaves the default")
	plain := flag.Bool("plain", false, "no rooms: a typed handler answers room.join with room.joined and joins nothing, to measure Troupe's connections and sessions without its rooms (bench/floor.sh)")
	var cluster nats.Flags
	cluster.Register(flag.CommandLine)
	flag.Parse()
	if *memRate > 0 {
		runtime.MemProfileRate = *memRate
	}
	if *pprofAddr != "" {
		go func() { log.Print(http.ListenAndServe(*pprofAddr, nil)) }()
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	raiseFileLimit()

	cfg, err := troupe.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	// A benchmark measures raw throughput and many connections: unless the
	// environment says otherwise, no rate limit and a high connection cap.
	if _, set := os.LookupEnv("WEBSOCKET_RATE_LIMIT"); !set {
		cfg.Settings.RateLimit = -1
	}
	if _, set := os.LookupEnv("WEBSOCKET_MAX_CONNECTIONS"); !set {
		cfg.Settings.MaxConnections = 200000
	}
	cfg.RoomProtocol = !*plain
	var bp *nats.Backplane
	if cluster.Enabled() {
		opts, err := cluster.Options()
		if err != nil {
			log.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		bp, err = nats.Open(ctx, opts)
		cancel()
		if err != nil {
			log.Fatal(err)
		}
		cfg.Backplane = bp
	}
	srv, err := troupe.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	register(srv)
	if *plain {
		registerPlain(srv)
	}

	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Metrics(), collectors.NewGoCollector())
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Troupe first: the HTTP fallback's event streams are requests
		// that http.Server.Shutdown would wait for.
		_ = srv.Shutdown(ctx)
		_ = hs.Shutdown(ctx)
		if bp != nil {
			_ = bp.Close()
		}
	}()
	log.Printf("benchserver: ws://%s/ws", *addr)
	if err := hs.ListenAndServe(); err != http.ErrServerClosed {
		log.Print(err)
	}
	<-stopped
}

// register installs what the built-in room protocol does not cover: the
// protocol's room.join, room.leave and room.publish are Troupe's own.
func register(srv *troupe.Server) {
	troupe.Handle(srv, "bench.echo", func(c *troupe.Context, _ json.RawMessage) error {
		return c.Reply("bench.echo", c.Payload())
	})
}

// registerPlain answers room.join and room.leave as the bench protocol
// asks, with no room behind them: what is left of a connect + join is
// Troupe's handshake, session and typed dispatch.
func registerPlain(srv *troupe.Server) {
	type roomPayload struct {
		Room string `json:"room"`
	}
	troupe.Handle(srv, "room.join", func(c *troupe.Context, p roomPayload) error {
		return c.Reply("room.joined", p)
	})
	troupe.Handle(srv, "room.leave", func(c *troupe.Context, p roomPayload) error {
		return c.Reply("room.left", p)
	})
}
