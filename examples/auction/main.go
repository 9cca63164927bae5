// Command auction is a live auction on Troupe's room logic: every room is
// an auction; bids are typed requests the room answers accepted or
// rejected, accepted bids reach every member in one order through the
// room's numbered stream, a late joiner gets the current state, and the
// auction ends by a room timer.
//
//	go run ./examples/auction -addr 127.0.0.1:8082 -length 2m
//
// then open http://127.0.0.1:8082/ in a few tabs.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/troupehq/troupe"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8082", "listen address")
	length := flag.Duration("length", 2*time.Minute, "how long each auction runs")
	flag.Parse()
	handler, srv, err := newAuction(troupe.Config{}, *length)
	if err != nil {
		log.Fatal(err)
	}
	hs := &http.Server{Addr: *addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, os.Interrupt)
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = hs.Shutdown(ctx)
	}()
	log.Printf("auction: http://%s/", *addr)
	if err := hs.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
