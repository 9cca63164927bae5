// Command chat is a multi-room chat built on Troupe's room protocol: a page
// at "/" (plain JavaScript, using the JavaScript client served at
// "/troupe.js"), the WebSocket it talks to at "/ws" and Prometheus metrics
// at "/metrics".
//
//	go run ./examples/chat -addr 127.0.0.1:8080
//
// then open http://127.0.0.1:8080/ in two windows. Connection settings come
// from the WEBSOCKET_* and TROUPE_* environment variables (see
// troupe.ConfigFromEnv);
// a malformed one stops the command with exit status 2. The server itself is
// package chatserver, which documents what the chat adds to the room
// protocol.
//
// Several chat processes can serve the same rooms, each one a node of a
// cluster whose rooms live in NATS JetStream: with -cluster (and -routes)
// each process embeds a NATS server routed to the others', with -nats they
// join a NATS cluster that runs elsewhere. The repository's README shows
// three nodes on one machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/backplane/nats"
	"github.com/troupehq/troupe/examples/chatserver"
)

// shutdownTimeout bounds each step of a graceful stop, so that a client that
// does not answer the close handshake cannot hold the process.
const shutdownTimeout = 5 * time.Second

// clusterStartTimeout bounds the wait for the cluster at start: the other
// nodes' NATS servers may start a few seconds later.
const clusterStartTimeout = time.Minute

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	var cluster nats.Flags
	cluster.Register(flag.CommandLine)
	flag.Parse()
	raiseFileLimit() // one file descriptor per connection

	cfg, err := troupe.ConfigFromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "chat: invalid environment: %v\n", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chat: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var opts []chatserver.Option
	var bp *nats.Backplane
	if cluster.Enabled() {
		bp, err = openBackplane(ctx, cluster)
		if err != nil {
			fmt.Fprintf(os.Stderr, "chat: cluster: %v\n", err)
			_ = ln.Close()
			os.Exit(1)
		}
		opts = append(opts, chatserver.WithBackplane(bp))
		log.Printf("chat: node %s of a cluster", bp.Node())
	}
	log.Printf("chat: listening on http://%s/", ln.Addr())
	err = run(ctx, ln, cfg, opts...)
	if bp != nil {
		// After the rooms stopped: the backplane hands its leaderships
		// over before its NATS server stops.
		err = errors.Join(err, bp.Close())
	}
	if err != nil {
		log.Printf("chat: %v", err)
		stop()
		os.Exit(1)
	}
	log.Printf("chat: stopped")
}

// openBackplane joins the cluster the flags describe, waiting for the other
// nodes up to clusterStartTimeout.
func openBackplane(ctx context.Context, cluster nats.Flags) (*nats.Backplane, error) {
	opts, err := cluster.Options()
	if err != nil {
		return nil, err
	}
	opts.Logger = slog.Default()
	ctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
	defer cancel()
	return nats.Open(ctx, opts)
}

// run serves the chat on ln until ctx ends, then stops gracefully: the HTTP
// server (no new connections) and Troupe, which closes every session with
// 1001 once the messages queued for it are written.
// http.Server.Shutdown alone would not do: it forgets connections once they
// are upgraded.
func run(ctx context.Context, ln net.Listener, cfg troupe.Config, opts ...chatserver.Option) error {
	handler, srv, err := chatserver.New(cfg, opts...)
	if err != nil {
		_ = ln.Close()
		return err
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	// http.Server.Shutdown waits for the requests in progress, and the
	// HTTP fallback's event streams last as long as their sessions: Troupe
	// closes them as Shutdown begins.
	hs.RegisterOnShutdown(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	select {
	case err := <-served:
		_ = srv.Close()
		return err
	case <-ctx.Done():
	}

	httpCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	httpErr := hs.Shutdown(httpCtx)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		httpErr = errors.Join(httpErr, err)
	}

	wsCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return errors.Join(httpErr, srv.Shutdown(wsCtx))
}
