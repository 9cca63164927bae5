package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// envelope is Troupe's message: {"type","payload","id"}.
type envelope struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
	ID      json.RawMessage `json:"id,omitempty"`
}

type outEnvelope struct {
	Type    string `json:"type"`
	ID      any    `json:"id,omitempty"`
	Room    string `json:"room,omitempty"`
	Payload any    `json:"payload,omitempty"`
}

func encode(typ string, payload any, id any) ([]byte, error) {
	return json.Marshal(outEnvelope{Type: typ, ID: id, Payload: payload})
}

// outFrame is a message waiting for the writer; id is the request's (0:
// none).
type outFrame struct {
	data []byte
	id   int64
}

type answer struct {
	env *envelope
	err error
}

// pending is a request waiting for its answer.
type pending struct {
	done chan answer // capacity 1
	sent bool        // the writer has taken it
	// onAnswer, if set, runs under c.mu when the request is settled, before
	// any later message is handled: rooms update their state with it.
	onAnswer func(env *envelope, err error)
}

type handler struct {
	fn func(json.RawMessage)
}

type requestHandler struct {
	fn func(id, payload json.RawMessage)
}

// Client is a connection to a Troupe server, or to any of the nodes of a
// cluster, that comes back by itself. Its methods may be called from any
// goroutine; the handlers it calls (Handle, HandleRequest, a Room's On…
// functions, Options.OnStatus and OnError) run one at a time, in the order
// the messages arrived, on one goroutine of the client's.
type Client struct {
	urls   []string
	opts   Options
	ctx    context.Context // the client's lifetime
	cancel context.CancelFunc
	events *eventLoop

	runDone   chan struct{}
	first     chan struct{} // closed at the first connection
	firstOnce sync.Once
	closing   chan struct{} // closed once Close has finished
	nextID    atomic.Int64

	mu          sync.Mutex
	started     bool // Connect started the goroutines
	closed      bool
	conn        Conn          // the open connection, nil between connections
	up          chan struct{} // closed while a connection is open
	outbox      int           // publishes not yet acknowledged (see outbox.go)
	connections int
	lastErr     error
	pending     map[int64]*pending
	out         []outFrame
	outWake     chan struct{} // capacity 1: wakes the writer
	drained     chan struct{} // closed (and replaced) when the writer takes the queue
	handlers    map[string][]*handler
	requests    map[string]*requestHandler
	rooms       map[string]*Room
	roomOrder   []*Room
}

// Dial connects to the first of urls (the nodes of one cluster, or a single
// server's ws:// URL) that answers, trying them in turn with backoff until
// one does or ctx ends, and returns the client. ctx bounds this first
// connection only: later reconnects go on until Close. Every lost
// connection moves on to the next URL, so a client whose node went away
// resumes through another; its rooms rejoin there.
//
// Dial is New and Connect. Use those to set handlers up before anything
// can arrive (the server may send at once, as the chat's welcome).
func Dial(ctx context.Context, urls []string, opts *Options) (*Client, error) {
	c, err := New(urls, opts)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// New returns a client of urls that does not connect yet: register
// handlers, set rooms up (Join waits for the connection), then Connect.
func New(urls []string, opts *Options) (*Client, error) {
	if len(urls) == 0 {
		return nil, errors.New("client: no URL")
	}
	lifetime, cancel := context.WithCancel(context.Background())
	return &Client{
		urls:     slices.Clone(urls),
		opts:     opts.withDefaults(),
		ctx:      lifetime,
		cancel:   cancel,
		events:   newEventLoop(),
		runDone:  make(chan struct{}),
		first:    make(chan struct{}),
		closing:  make(chan struct{}),
		pending:  make(map[int64]*pending),
		outWake:  make(chan struct{}, 1),
		up:       make(chan struct{}),
		drained:  make(chan struct{}),
		handlers: make(map[string][]*handler),
		requests: make(map[string]*requestHandler),
		rooms:    make(map[string]*Room),
	}, nil
}

// Connect starts connecting (once: later calls only wait) and returns when
// the first connection is open. If ctx ends first it returns ctx's error
// (with the last attempt's), and the client goes on trying until Close.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if !c.started {
		c.started = true
		go c.events.run()
		go c.run()
	}
	c.mu.Unlock()
	select {
	case <-c.first:
		return nil
	case <-c.closing:
		return ErrClosed
	case <-ctx.Done():
		c.mu.Lock()
		last := c.lastErr
		c.mu.Unlock()
		if last != nil {
			return fmt.Errorf("client: connect to %v: %w (last attempt: %w)", c.urls, ctx.Err(), last)
		}
		return fmt.Errorf("client: connect to %v: %w", c.urls, ctx.Err())
	}
}

// Close closes the connection for good (a normal close, 1000): no more
// reconnects, pending requests and joins fail with ErrClosed, and once it
// returns no handler starts any more and the client has no goroutine left,
// except the handler goroutine if a handler is running at that moment
// (Close may be called from a handler): it ends once that handler returns.
// Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		if !c.events.handling() {
			<-c.closing
		}
		return nil
	}
	c.closed = true
	for id, p := range c.pending {
		c.settleLocked(id, p, nil, ErrClosed)
	}
	c.out = nil
	for _, r := range c.roomOrder {
		r.onCloseLocked()
	}
	started := c.started
	c.mu.Unlock()
	c.cancel()
	if !started {
		close(c.closing)
		return nil
	}
	<-c.runDone
	c.post(func() {
		if c.opts.OnStatus != nil {
			c.opts.OnStatus(Status{State: Closed})
		}
	})
	c.events.close()
	if !c.events.handling() {
		<-c.events.done
	}
	close(c.closing)
	return nil
}

// roomOfLocked is the room a payload's "room" field names, if the client
// has it.
func (c *Client) roomOfLocked(payload json.RawMessage) *Room {
	var p struct {
		Room string `json:"room"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return nil
	}
	return c.rooms[p.Room]
}

// URLs returns the nodes the client connects to, in the order it tries them.
func (c *Client) URLs() []string { return slices.Clone(c.urls) }

// Connected reports whether a connection is open at the moment.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// post queues f for the handler goroutine.
func (c *Client) post(f func()) { c.events.post(f) }

func (c *Client) status(s Status) {
	if fn := c.opts.OnStatus; fn != nil {
		c.post(func() { fn(s) })
	}
}

// run connects, serves the connection until it ends, waits, and connects
// again, until Close.
func (c *Client) run() {
	defer close(c.runDone)
	attempt, next := 0, 0
	for {
		url := c.urls[next]
		err, delivered := c.connect(url)
		if c.ctx.Err() != nil {
			return
		}
		if delivered {
			attempt = 0
		}
		next = (next + 1) % len(c.urls)
		delay := backoff(attempt, c.opts.MinDelay, c.opts.MaxDelay, c.opts.random)
		attempt++
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		c.status(Status{State: Disconnected, URL: url, Err: err, Retry: delay})
		t := time.NewTimer(delay)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// connect makes one connection to url and serves it until it ends. It
// returns why it ended, and whether the server sent anything on it.
func (c *Client) connect(url string) (error, bool) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.ConnectTimeout)
	conn, err := c.opts.Transport.Dial(ctx, url)
	cancel()
	if err != nil {
		return err, false
	}
	return c.serve(conn, url)
}

var errClientClosed = errors.New("client closed")

func (c *Client) serve(conn Conn, url string) (error, bool) {
	connCtx, stop := context.WithCancelCause(c.ctx)
	defer stop(nil)

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = conn.Abort()
		return ErrClosed, false
	}
	c.conn = conn
	close(c.up)
	c.connections++
	reconnected := c.connections > 1
	// Rooms first, so that queued publishes reach the server after the
	// joins they need.
	var joins []outFrame
	for _, r := range c.roomOrder {
		if f, ok := r.onConnectLocked(); ok {
			joins = append(joins, f)
		}
	}
	c.out = append(joins, c.out...)
	c.wakeWriterLocked()
	c.status(Status{State: Connected, URL: url, Reconnected: reconnected})
	c.mu.Unlock()
	c.firstOnce.Do(func() { close(c.first) })

	var delivered atomic.Bool
	var lastRead atomic.Int64 // UnixNano of the last message read
	var wg sync.WaitGroup
	wg.Go(func() { c.read(conn, stop, &delivered, &lastRead) })
	wg.Go(func() { c.write(connCtx, conn, stop) })
	if c.opts.PingInterval > 0 {
		wg.Go(func() { c.heartbeat(connCtx, conn, stop, &lastRead) })
	}
	<-connCtx.Done()
	cause := context.Cause(connCtx)
	if c.ctx.Err() != nil {
		cause = errClientClosed
		_ = conn.Close()
	} else {
		_ = conn.Abort()
	}
	wg.Wait()

	c.mu.Lock()
	c.conn = nil
	c.up = make(chan struct{})
	// Requests already sent may or may not have been carried out; their
	// answers are gone with the connection. Unsent ones wait in the queue.
	for id, p := range c.pending {
		if p.sent {
			c.settleLocked(id, p, nil, fmt.Errorf("%w: %w", ErrDisconnected, cause))
		}
	}
	for _, r := range c.roomOrder {
		r.onDisconnectLocked()
	}
	c.mu.Unlock()
	return cause, delivered.Load()
}

// read hands every envelope to dispatch until the connection ends.
func (c *Client) read(conn Conn, stop context.CancelCauseFunc, delivered *atomic.Bool, lastRead *atomic.Int64) {
	for {
		// Not connCtx: cancelling a read would cut the connection, and Close
		// wants a close handshake; closing the connection ends the read.
		msg, err := conn.Read(context.Background())
		if err != nil {
			stop(err)
			return
		}
		// The server accepted and answered: the backoff starts over next
		// time (counting an open alone would hammer a server that accepts
		// and at once closes).
		delivered.Store(true)
		lastRead.Store(time.Now().UnixNano())
		if !conn.Batched() {
			c.dispatch(msg)
			continue
		}
		for len(msg) > 0 {
			line := msg
			if i := bytes.IndexByte(msg, '\n'); i >= 0 {
				line, msg = msg[:i], msg[i+1:]
			} else {
				msg = nil
			}
			if len(bytes.TrimSpace(line)) > 0 {
				c.dispatch(line)
			}
		}
	}
}

// write sends the queued messages in order.
func (c *Client) write(ctx context.Context, conn Conn, stop context.CancelCauseFunc) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.outWake:
		}
		for {
			c.mu.Lock()
			batch := c.out
			c.out = nil
			for _, f := range batch {
				if p := c.pending[f.id]; f.id != 0 && p != nil {
					p.sent = true
				}
			}
			close(c.drained)
			c.drained = make(chan struct{})
			c.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, f := range batch {
				wctx, cancel := context.WithTimeout(ctx, c.opts.WriteTimeout)
				err := conn.Write(wctx, f.data)
				cancel()
				if err != nil {
					stop(err)
					return
				}
			}
		}
	}
}

// heartbeat sends a "ping" every PingInterval and drops the connection
// when its "pong" does not come within PongTimeout and nothing else came
// either: on a slow link the pong waits behind what the server queued
// before it, and what keeps arriving shows that the connection lives.
func (c *Client) heartbeat(ctx context.Context, conn Conn, stop context.CancelCauseFunc, lastRead *atomic.Int64) {
	t := time.NewTicker(c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		id := c.nextID.Add(1)
		data, _ := encode("ping", map[string]int64{"t": time.Now().UnixMilli()}, id)
		p := &pending{done: make(chan answer, 1)}
		c.mu.Lock()
		if c.conn != conn {
			c.mu.Unlock()
			return
		}
		c.pending[id] = p
		c.out = append(c.out, outFrame{data: data, id: id})
		c.wakeWriterLocked()
		c.mu.Unlock()
		if !c.awaitPong(ctx, p, lastRead) {
			c.mu.Lock()
			if c.pending[id] == p {
				delete(c.pending, id)
			}
			c.mu.Unlock()
			stop(ErrPongTimeout)
			return
		}
	}
}

// awaitPong waits for the pong p, and reports false if PongTimeout passed
// without it and without any other message.
func (c *Client) awaitPong(ctx context.Context, p *pending, lastRead *atomic.Int64) bool {
	timer := time.NewTimer(c.opts.PongTimeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return true // the connection is ending anyway
		case <-p.done:
			return true
		case <-timer.C:
			quiet := time.Since(time.Unix(0, lastRead.Load()))
			if quiet >= c.opts.PongTimeout {
				return false
			}
			timer.Reset(c.opts.PongTimeout - quiet)
		}
	}
}

func (c *Client) wakeWriterLocked() {
	select {
	case c.outWake <- struct{}{}:
	default:
	}
}

// settleLocked ends a pending request with its answer or error.
func (c *Client) settleLocked(id int64, p *pending, env *envelope, err error) {
	delete(c.pending, id)
	if p.onAnswer != nil {
		p.onAnswer(env, err)
	}
	p.done <- answer{env: env, err: err}
}

// dispatch takes in one envelope from the server, in the order the server
// sent them.
func (c *Client) dispatch(data []byte) {
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil || env.Type == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	switch env.Type {
	case "room.joined", "room.message", "presence.diff", "presence.count", "presence.list", "room.left", "room.resync":
		if r := c.roomOfLocked(env.Payload); r != nil {
			r.onEnvelopeLocked(&env)
		}
	case "error", "reply":
	default:
		// The application's own events about a room (HandleRoom).
		if len(c.rooms) > 0 && bytes.Contains(env.Payload, []byte(`"room"`)) {
			if r := c.roomOfLocked(env.Payload); r != nil && len(r.custom[env.Type]) > 0 {
				r.onEnvelopeLocked(&env)
			}
		}
	}
	if len(env.ID) > 0 && env.ID[0] != '"' {
		if id, err := strconv.ParseInt(string(env.ID), 10, 64); err == nil {
			if p := c.pending[id]; p != nil {
				var err error
				if env.Type == "error" {
					err = decodeError(env.Payload)
				}
				c.settleLocked(id, p, &env, err)
				return
			}
		}
	}
	if len(env.ID) > 0 && env.ID[0] == '"' && env.Type != "error" && env.Type != "reply" {
		// This client's ids are numbers: a string id is a request from the
		// server (Session.Request).
		c.answerLocked(&env)
		return
	}
	hs := c.handlers[env.Type]
	if len(hs) == 0 {
		if env.Type == "error" && c.opts.OnError != nil {
			err, fn := decodeError(env.Payload), c.opts.OnError
			c.post(func() { fn(err) })
		}
		return
	}
	for _, h := range hs {
		fn, payload := h.fn, env.Payload
		c.post(func() { fn(payload) })
	}
}

func decodeError(payload json.RawMessage) *Error {
	e := &Error{}
	if json.Unmarshal(payload, e) != nil || e.Code == "" {
		e.Code = "error"
	}
	return e
}

// answerLocked answers a request of the server's.
func (c *Client) answerLocked(env *envelope) {
	h := c.requests[env.Type]
	if h == nil {
		c.replyLocked(env.ID, "error", &Error{Code: "unknown_type", Message: "no handler for " + env.Type})
		return
	}
	fn, id, payload := h.fn, env.ID, env.Payload
	c.post(func() { fn(id, payload) })
}

// replyLocked queues an answer to the server's request id on the current
// connection; with none it is dropped, as the server's request failed with
// the connection.
func (c *Client) replyLocked(id json.RawMessage, typ string, payload any) {
	if c.conn == nil || c.closed {
		return
	}
	data, err := encode(typ, payload, id)
	if err != nil {
		data, _ = encode("error", &Error{Code: "handler_error", Message: err.Error()}, id)
	}
	c.out = append(c.out, outFrame{data: data})
	c.wakeWriterLocked()
}

// enqueue queues a message (a request when p is not nil). Without a
// connection it is kept for the next one if queue is set (at most
// MaxQueued), refused with ErrDisconnected otherwise; with a connection and
// a full queue it waits for the writer.
func (c *Client) enqueue(ctx context.Context, f outFrame, p *pending, queue bool) error {
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		if c.conn == nil && !queue {
			c.mu.Unlock()
			return ErrDisconnected
		}
		if len(c.out) < c.opts.MaxQueued {
			break
		}
		if c.conn == nil {
			c.mu.Unlock()
			return ErrQueueFull
		}
		drained := c.drained
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-drained:
		}
		c.mu.Lock()
	}
	if p != nil {
		c.pending[f.id] = p
	}
	c.out = append(c.out, f)
	c.wakeWriterLocked()
	c.mu.Unlock()
	return nil
}

// Send sends {"type","payload"} without waiting for an answer. While there
// is no connection the message waits for the next one (see
// Options.MaxQueued).
func (c *Client) Send(ctx context.Context, typ string, payload any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	data, err := encode(typ, payload, nil)
	if err != nil {
		return err
	}
	return c.enqueue(ctx, outFrame{data: data}, nil, true)
}

type requestOptions struct {
	noQueue  bool
	onAnswer func(*envelope, error)
	room     string // the envelope's "room": a request for a room's own logic
}

// roundTrip sends a request and waits for the envelope that answers it.
func (c *Client) roundTrip(ctx context.Context, typ string, payload any, o requestOptions) (*envelope, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id := c.nextID.Add(1)
	data, err := json.Marshal(outEnvelope{Type: typ, ID: id, Room: o.room, Payload: payload})
	if err != nil {
		return nil, err
	}
	p := &pending{done: make(chan answer, 1), onAnswer: o.onAnswer}
	if err := c.enqueue(ctx, outFrame{data: data, id: id}, p, !o.noQueue); err != nil {
		if o.onAnswer != nil {
			c.mu.Lock()
			o.onAnswer(nil, err)
			c.mu.Unlock()
		}
		return nil, err
	}
	select {
	case a := <-p.done:
		return a.env, a.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if c.pending[id] == p {
		c.out = slices.DeleteFunc(c.out, func(f outFrame) bool { return f.id == id })
		c.settleLocked(id, p, nil, ctx.Err())
	}
	c.mu.Unlock()
	a := <-p.done
	return a.env, a.err
}

// Request sends {"type","payload","id"} and decodes the payload of the
// answer carrying the same id into an R. ctx is the timeout: without a
// deadline it waits until the answer, the end of the connection
// (ErrDisconnected) or Close (ErrClosed). An error envelope is returned as
// an *Error (errors.As). A request made while there is no connection waits
// for the next one.
func Request[R any](ctx context.Context, c *Client, typ string, payload any) (R, error) {
	return request[R](ctx, c, typ, payload, requestOptions{})
}

// RoomRequest is Request for a room's own logic (a server's
// troupe.HandleRoom handler for typ): the envelope names the room, and the
// room answers in its order. Not joined, it fails with an *Error of code
// not_member.
func RoomRequest[R any](ctx context.Context, r *Room, typ string, payload any) (R, error) {
	return request[R](ctx, r.c, typ, payload, requestOptions{room: r.name})
}

func request[R any](ctx context.Context, c *Client, typ string, payload any, o requestOptions) (R, error) {
	var r R
	env, err := c.roundTrip(ctx, typ, payload, o)
	if err != nil {
		return r, err
	}
	if len(env.Payload) > 0 && !bytes.Equal(env.Payload, []byte("null")) {
		if err := json.Unmarshal(env.Payload, &r); err != nil {
			return r, fmt.Errorf("client: answer to %s: %w", typ, err)
		}
	}
	return r, nil
}

// Handle calls fn with the payload, decoded into a T, of every envelope of
// the given type that answers none of this client's requests (the server's
// Session.Send, a room's broadcasts). Handlers run in the order the
// messages arrived, one at a time, on the client's handler goroutine; a
// payload that does not decode goes to Options.OnError. It returns a
// function that removes the handler.
func Handle[T any](c *Client, typ string, fn func(T)) (remove func()) {
	h := &handler{fn: decoding(c, typ, fn)}
	c.mu.Lock()
	c.handlers[typ] = append(c.handlers[typ], h)
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.handlers[typ] = slices.DeleteFunc(c.handlers[typ], func(x *handler) bool { return x == h })
		if len(c.handlers[typ]) == 0 {
			delete(c.handlers, typ)
		}
		c.mu.Unlock()
	}
}

// decoding wraps fn for payloads of type what: it decodes each into a T
// and calls fn, or tells Options.OnError when the payload does not decode.
func decoding[T any](c *Client, what string, fn func(T)) func(json.RawMessage) {
	return func(raw json.RawMessage) {
		var v T
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &v); err != nil {
				if c.opts.OnError != nil {
					c.opts.OnError(fmt.Errorf("client: %s payload: %w", what, err))
				}
				return
			}
		}
		fn(v)
	}
}

// HandleRequest answers the server's requests of the given type
// (Session.Request on the server): fn's result is sent as {"type":"reply"};
// an error as an error envelope, with its code if it is an *Error, else
// "handler_error". A request of a type without a handler is answered
// "unknown_type". fn runs on the handler goroutine; ctx ends with the
// client.
func HandleRequest[T, R any](c *Client, typ string, fn func(ctx context.Context, req T) (R, error)) (remove func()) {
	h := &requestHandler{fn: func(id json.RawMessage, raw json.RawMessage) {
		var v T
		var answerType string
		var answer any
		if err := json.Unmarshal(orNull(raw), &v); err != nil {
			answerType, answer = "error", &Error{Code: "invalid_payload", Message: err.Error()}
		} else if r, err := fn(c.ctx, v); err != nil {
			e := &Error{Code: "handler_error", Message: err.Error()}
			if te := (*Error)(nil); errors.As(err, &te) {
				e = te
			}
			answerType, answer = "error", e
		} else {
			answerType, answer = "reply", r
		}
		c.mu.Lock()
		c.replyLocked(id, answerType, answer)
		c.mu.Unlock()
	}}
	c.mu.Lock()
	c.requests[typ] = h
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		if c.requests[typ] == h {
			delete(c.requests, typ)
		}
		c.mu.Unlock()
	}
}

func orNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}
