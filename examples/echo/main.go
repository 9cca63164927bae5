// Command echo is the smallest Troupe server: every text message is sent
// back to the client that sent it.
//
//	go run ./examples/echo -addr 127.0.0.1:8081
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/troupehq/troupe"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	flag.Parse()

	srv, err := troupe.New(troupe.Config{
		RawMessages: true,
		OnMessage:   func(s *troupe.Session, text []byte) { _ = s.SendText(text) },
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("echo: ws://%s/ws", *addr)
	log.Fatal(hs.ListenAndServe())
}
