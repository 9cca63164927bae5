// Command chat is a multi-room chat built on Troupe's room protocol: a page
// at "/" (plain JavaScript, using the JavaScript client served at
// "/troupe.js"), the WebSocket it talks to at "/ws" and Prometheus metrics
// at "/metrics".
//
//	go run ./examples/chat -addr 127.0.0.1:8080
//
// then open http://127.0.0.1:8080/ in two windows. Connection settings come
// from the WEBSOCKET_* environment variables (see troupe.SettingsFromEnv);
// a malformed one stops the command with exit status 2. The server itself is
// package chatserver, which documents what the chat adds to the room
// protocol.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/examples/chatserver"
)

// shutdownTimeout bounds each step of a graceful stop, so that a client that
// does not answer the close handshake cannot hold the process.
const shutdownTimeout = 5 * time.Second

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	flag.Parse()

	settings, err := troupe.SettingsFromEnv()
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

	log.Printf("chat: listening on http://%s/", ln.Addr())
	if err := run(ctx, ln, settings); err != nil {
		log.Printf("chat: %v", err)
		stop()
		os.Exit(1)
	}
	log.Printf("chat: stopped")
}

// run serves the chat on ln until ctx ends, then stops gracefully: first the
// HTTP server (no new connections), then Troupe, which closes every
// WebSocket with 1001 once the messages queued for it are written.
// http.Server.Shutdown alone would not do: it forgets connections once they
// are upgraded.
func run(ctx context.Context, ln net.Listener, settings troupe.Settings) error {
	handler, srv, err := chatserver.New(settings)
	if err != nil {
		_ = ln.Close()
		return err
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
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
