package client

import (
	"math/rand/v2"
	"time"
)

// Options configure a Client. Every field follows the server's convention:
// zero means the default, and a negative duration turns a timer off.
type Options struct {
	// Transport opens the connections. Nil: &WebSocket{}.
	Transport Transport

	// MinDelay and MaxDelay bound the wait before a reconnect: attempt n
	// (from 0) waits a random time in [0, min(MaxDelay, MinDelay·2ⁿ)] (full
	// jitter, so that clients dropped together come back spread out). The
	// count starts over once a connection has delivered a message.
	// Defaults: 250 ms and 10 s.
	MinDelay, MaxDelay time.Duration

	// PingInterval is the time between heartbeats, "ping" envelopes that the
	// server answers "pong" (default 20 s; negative: none). Keep it below the
	// server's IdleTimeout (60 s by default): the pings are what keep a
	// client that only listens from being closed as idle.
	PingInterval time.Duration
	// PongTimeout is how long a ping may wait for its pong, while nothing
	// else arrives either, before the connection counts as dead and is
	// dropped (default 10 s): a half-open TCP connection looks open for
	// minutes. Messages that keep arriving extend the wait, since on a slow
	// link the pong comes behind them.
	PongTimeout time.Duration

	// ConnectTimeout bounds one connection attempt (default 10 s).
	ConnectTimeout time.Duration
	// WriteTimeout bounds the write of one message (default 10 s); a write
	// that takes longer drops the connection.
	WriteTimeout time.Duration
	// RequestTimeout bounds the wait for the answer to a request the
	// client makes on its own: each attempt of a Publish (sent again, with
	// the same mid, while the caller's context lives), each page of a
	// catch-up's history and the join that ends a catch-up (default 10 s).
	// A refusal the server cannot tie to its request, such as rate_limited,
	// would otherwise leave them waiting for ever.
	RequestTimeout time.Duration

	// MaxQueued is how many messages wait for a connection while there is
	// none (default 1000); beyond it Send and Request fail with
	// ErrQueueFull. While connected, a full queue makes them wait (within
	// their context) for the writer instead.
	MaxQueued int

	// MaxOutbox bounds the room publishes kept until the server
	// acknowledges them, to be sent again after a reconnect (default
	// 1000); beyond it Publish fails with ErrOutboxFull. Negative: off,
	// publishes carry no message id (unless PublishMid gives one) and a
	// publish cut off by a disconnect fails with ErrDisconnected.
	MaxOutbox int

	// OnStatus is told of every change of connection: Connected (with
	// Reconnected), Disconnected (with the error and the delay before the
	// next attempt) and finally Closed. It runs on the client's handler
	// goroutine, in order with the messages.
	OnStatus func(Status)

	// OnError receives error envelopes that answer no request, and payloads
	// that a Handle function could not decode. It runs on the handler
	// goroutine.
	OnError func(error)

	// random returns a number in [0, 1): tests fix it.
	random func() float64
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Transport == nil {
		r.Transport = &WebSocket{}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&r.MinDelay, 250*time.Millisecond)
	def(&r.MaxDelay, 10*time.Second)
	def(&r.PingInterval, 20*time.Second)
	def(&r.PongTimeout, 10*time.Second)
	def(&r.ConnectTimeout, 10*time.Second)
	def(&r.WriteTimeout, 10*time.Second)
	def(&r.RequestTimeout, 10*time.Second)
	if r.MinDelay < 0 {
		r.MinDelay = 0
	}
	if r.MaxDelay < r.MinDelay {
		r.MaxDelay = r.MinDelay
	}
	if r.MaxQueued <= 0 {
		r.MaxQueued = 1000
	}
	if r.MaxOutbox == 0 {
		r.MaxOutbox = 1000
	}
	if r.random == nil {
		r.random = rand.Float64
	}
	return r
}

// backoff is the delay before reconnect attempt number attempt (0 for the
// first): a random time up to min(max, min·2^attempt).
func backoff(attempt int, min, max time.Duration, random func() float64) time.Duration {
	d := min
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max || d <= 0 && min > 0 {
		d = max
	}
	return time.Duration(random() * float64(d))
}

// State is the state of a client's connection.
type State int

const (
	// Disconnected: no connection; the client is waiting to try again.
	Disconnected State = iota
	// Connected: a connection is open.
	Connected
	// Closed: Close was called; the client is done.
	Closed
)

func (s State) String() string {
	switch s {
	case Disconnected:
		return "disconnected"
	case Connected:
		return "connected"
	case Closed:
		return "closed"
	}
	return "unknown"
}

// Status is a change of a client's connection, given to Options.OnStatus.
type Status struct {
	State State
	// URL is the node connected to, or the one that was lost or could not
	// be reached.
	URL string
	// Reconnected is true on Connected for every connection but the first.
	Reconnected bool
	// Err is why the connection ended or could not be made (Disconnected).
	Err error
	// Retry is the delay before the next attempt (Disconnected).
	Retry time.Duration
}
