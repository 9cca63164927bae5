// Command echo is the smallest Troupe server: every text message is sent
// back to the client that sent it.
//
//	go run ./examples/echo -addr 127.0.0.1:8081
//
// Connection settings come from the WEBSOCKET_* environment variables (see
// troupe.SettingsFromEnv); a malformed one stops the command with exit
// status 2.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/troupehq/troupe"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	flag.Parse()

	settings, err := troupe.SettingsFromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo: invalid environment: %v\n", err)
		os.Exit(2)
	}
	srv, err := newServer(settings)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("echo: ws://%s/ws", *addr)
	log.Fatal(hs.ListenAndServe())
}

// newServer is the echo server with the given connection settings.
func newServer(settings troupe.Settings) (*troupe.Server, error) {
	return troupe.New(troupe.Config{
		Settings:    settings,
		RawMessages: true,
		OnMessage:   func(s *troupe.Session, text []byte) { _ = s.SendText(text) },
	})
}
