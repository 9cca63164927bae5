package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/internal/session"
)

// clientFrame is a frame as a client sends it (masked), with a payload
// under 126 bytes.
func clientFrame(fin bool, opcode byte, payload string) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	out := append([]byte{b0, 0x80 | byte(len(payload))}, key[:]...)
	for i := range len(payload) {
		out = append(out, payload[i]^key[i%4])
	}
	return out
}

const (
	opContinuation = 0x0
	opText         = 0x1
	opPing         = 0x9
	opPong         = 0xa
)

// rawPeer is a hand-written client on a raw connection: it answers the
// server's pings, as every WebSocket client does, and counts them and the
// pongs the server sends.
type rawPeer struct {
	nc    net.Conn
	mu    sync.Mutex // one write at a time
	pings atomic.Int32
	pongs atomic.Int32
	mute  atomic.Bool // do not answer pings
	done  chan struct{}
}

func newRawPeer(t *testing.T, nc net.Conn) *rawPeer {
	p := &rawPeer{nc: nc, done: make(chan struct{})}
	go p.readLoop()
	t.Cleanup(func() {
		_ = nc.Close()
		<-p.done
	})
	return p
}

func (p *rawPeer) write(t *testing.T, frames ...[]byte) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.nc.Write(bytes.Join(frames, nil)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// writeSplit writes frame in two writes, at, with pause between them, and
// nothing else in between (no pong answering a ping in the middle).
func (p *rawPeer) writeSplit(t *testing.T, frame []byte, at int, pause func()) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.nc.Write(frame[:at]); err != nil {
		t.Fatalf("write: %v", err)
	}
	pause()
	if _, err := p.nc.Write(frame[at:]); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readLoop reads the server's frames (unmasked, never fragmented here).
func (p *rawPeer) readLoop() {
	defer close(p.done)
	r := bufio.NewReader(p.nc)
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var x [2]byte
			if _, err := io.ReadFull(r, x[:]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint16(x[:]))
		case 127:
			var x [8]byte
			if _, err := io.ReadFull(r, x[:]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint64(x[:]))
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		switch h[0] & 0x0f {
		case opPing:
			p.pings.Add(1)
			if p.mute.Load() {
				continue
			}
			p.mu.Lock()
			_, err := p.nc.Write(clientFrame(true, opPong, string(payload)))
			p.mu.Unlock()
			if err != nil {
				return
			}
		case opPong:
			p.pongs.Add(1)
		}
	}
}

// Control frames before, between and inside messages, alone or sharing one
// TCP write with a message, split across writes, while the server pings
// every few milliseconds: the application receives every message once,
// whole and in order, an empty message included, and nothing else. (An idle
// connection's read loop gets control frames through coder/websocket before
// it waits for its client; transport/idle.go says how.)
func TestControlFramesAroundMessages(t *testing.T) {
	got := make(chan string, 64)
	h := startServer(t, troupe.Config{
		Settings:  troupe.Settings{PingInterval: 5 * time.Millisecond},
		OnMessage: func(_ *troupe.Session, text []byte) { got <- string(text) },
	})
	p := newRawPeer(t, rawHandshake(t, h, "raw"))
	// The read loop goes idle and pings go by; some pauses are long enough
	// for the read loop to move to a new goroutine before it waits again.
	pauses := 0
	pause := func() {
		pauses++
		if pauses%2 == 0 {
			time.Sleep(150 * time.Millisecond)
		} else {
			time.Sleep(15 * time.Millisecond)
		}
	}

	pause()
	p.write(t, clientFrame(true, opPong, "unasked"), clientFrame(true, opText, "a"))
	pause()
	p.write(t, clientFrame(true, opPing, "p1"), clientFrame(true, opText, "b"))
	pause()
	p.write(t, clientFrame(false, opText, "c1"))
	pause()
	p.write(t, clientFrame(true, opPing, "p2"))
	pause()
	p.write(t, clientFrame(true, opContinuation, "c2"))
	pause()
	p.write(t, clientFrame(true, opText, ""))
	pause()
	p.writeSplit(t, clientFrame(true, opPong, "split"), 3, pause)
	pause()
	p.write(t, clientFrame(true, opPong, "x"), clientFrame(true, opPing, "p3"), clientFrame(true, opPong, "y"))
	pause()
	p.write(t, clientFrame(true, opText, "d"), clientFrame(true, opPong, "z"), clientFrame(true, opText, "e"))

	// Enough pings answered that every message above had pongs around it.
	deadline := time.After(waitTimeout)
	for p.pings.Load() < 10 || p.pongs.Load() < 3 { // p1, p2 and p3 answered
		select {
		case <-deadline:
			t.Fatalf("the server sent %d pings and %d pongs", p.pings.Load(), p.pongs.Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
	p.write(t, clientFrame(true, opText, "last"))

	want := []string{"a", "b", "c1c2", "", "d", "e", "last"}
	var all []string
	for len(all) == 0 || all[len(all)-1] != "last" {
		select {
		case m := <-got:
			all = append(all, m)
		case <-time.After(waitTimeout):
			t.Fatalf("the application received %q, then nothing; want %q", all, want)
		}
	}
	if !slices.Equal(all, want) {
		t.Errorf("the application received %q, want %q", all, want)
	}
	if s := h.rec.session(t, "raw"); !s.IsOpen() {
		t.Errorf("the session closed")
	}
}

// A connection that fails while the server's ping waits for its pong is
// closed, and OnClose told, without waiting for the pong timeout.
func TestConnectionErrorDuringPingClosesAtOnce(t *testing.T) {
	h := startServer(t, troupe.Config{
		Settings: troupe.Settings{PingInterval: 5 * time.Millisecond, PongTimeout: time.Hour, IdleTimeout: -1},
	})
	p := newRawPeer(t, rawHandshake(t, h, "raw"))
	p.mute.Store(true)
	s := h.rec.session(t, "raw")
	deadline := time.After(waitTimeout)
	for p.pings.Load() == 0 {
		select {
		case <-deadline:
			t.Fatal("no ping")
		case <-time.After(time.Millisecond):
		}
	}
	// Reserved bits set: a protocol error ends the server's reading.
	p.write(t, []byte{0xf1, 0x80, 0, 0, 0, 0})
	h.rec.waitClose(t, s) // fails if it waits for the pong timeout
	if s.IsOpen() {
		t.Error("the session is still open after OnClose")
	}
}

// Connections left idle long enough for the server to stop holding a
// goroutine for them (transport/idle.go) are served as before in every way
// a client can see: they receive broadcasts, what they send is answered,
// a client that vanishes without a close frame is noticed (OnClose), one
// the server drops at once is finished too, and Shutdown closes the others
// with 1001.
func TestIdleConnectionsStayServed(t *testing.T) {
	h := startServer(t, troupe.Config{})
	registerJoin(h.srv)
	troupe.Handle(h.srv, "ask", func(c *troupe.Context, n int) error { return c.Reply("answer", n) })
	const n = 40
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = h.dial(t, fmt.Sprintf("idle-%d", i))
		clients[i].startReading()
		clients[i].join(t, "room")
	}
	idle := func() { time.Sleep(300 * time.Millisecond) } // well past the server's 100 ms
	for round := range 3 {
		idle()
		if err := h.srv.Broadcast("room", "news", round); err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			if e := c.expect(t, "news"); string(e.Payload) != fmt.Sprint(round) {
				t.Fatalf("%s: news %s, want %d", c.name, e.Payload, round)
			}
		}
		idle()
		for i, c := range clients {
			c.send(t, "ask", i)
		}
		for i, c := range clients {
			if e := c.expect(t, "answer"); string(e.Payload) != fmt.Sprint(i) {
				t.Fatalf("%s: answer %s, want %d", c.name, e.Payload, i)
			}
		}
	}
	idle()
	// Half vanish: the TCP connection closes with no close frame.
	for _, c := range clients[:n/2] {
		s := h.rec.session(t, c.name)
		_ = c.ws.CloseNow()
		h.rec.waitClose(t, s)
	}
	idle()
	// A quarter are dropped by the server at once (no close handshake, so
	// nothing arrives from the client to wake their reading).
	for _, c := range clients[n/2 : 3*n/4] {
		s := h.rec.session(t, c.name)
		session.Drop(s, "shutdown")
		h.rec.waitClose(t, s)
	}
	idle()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, c := range clients[3*n/4:] {
		_, err := c.waitEnd(t)
		if code, reason := closeCode(err); code != websocket.StatusGoingAway {
			t.Errorf("%s: closed with %d %q, want 1001", c.name, code, reason)
		}
	}
}
