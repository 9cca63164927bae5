// Command spread is a loopback TCP proxy for load tests of several nodes:
// it accepts connections on one address and hands them to the backends in
// turn (connection i to backend i mod n), so that a load generator that
// knows one URL spreads its clients over every node. With one backend it
// is the same hop in front of a single node, the fair baseline.
//
//	spread -listen 127.0.0.1:9300 -to 127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003
package main

import (
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9300", "address to accept on (loopback)")
	to := flag.String("to", "", "backends, comma-separated host:port")
	flag.Parse()
	backends := strings.Split(*to, ",")
	if *to == "" {
		log.Fatal("spread: -to is required")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		_ = ln.Close()
	}()
	var n int
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Printf("spread: %v", err)
			continue
		}
		go pipe(c, backends[n%len(backends)])
		n++
	}
}

// pipe copies both ways until either side closes.
func pipe(c net.Conn, backend string) {
	defer c.Close()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		log.Printf("spread: %v", err)
		return
	}
	defer b.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(b, c); b.(*net.TCPConn).CloseWrite() }()
	go func() { defer wg.Done(); _, _ = io.Copy(c, b); c.(*net.TCPConn).CloseWrite() }()
	wg.Wait()
}
