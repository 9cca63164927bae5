// Package serve serves client connections: WebSocket connections over HTTP with
// coder/websocket and turns each one into a session actor: the upgrade
// handshake and origin check, the read loop, heartbeats and idle timeouts,
// the message size limit, and graceful or immediate shutdown.
package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/internal/gopool"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/internal/wire"
	"github.com/troupehq/troupe/typed"
)

// SubprotocolNDJSON is the subprotocol under which a session coalesces the
// messages queued for it into one text frame of newline-separated envelopes.
const SubprotocolNDJSON = "ndjson"

// Hooks are the callbacks a Handler drives. OnOpen, OnFrame and OnClose run
// one at a time per session, in order (OnOpen first, then the messages in
// the order the client sent them, OnClose last), on a worker goroutine
// taken while the session has messages waiting (not on the read loop).
// While a session's callbacks fall behind, at most a few of its messages
// wait and its connection is not read: the client is held back.
type Hooks struct {
	// Authorize, if set, runs before the upgrade; an error answers the
	// HTTP request with status (401 if status is 0) and no session is made.
	Authorize func(r *http.Request) (identity string, status int, err error)
	OnOpen    func(s *session.Session)
	OnFrame   func(s *session.Session, binary bool, data []byte)
	OnError   func(s *session.Session, err error)
	OnClose   func(s *session.Session, code int, reason string)
	// OnRateLimited is told of every "rate_limited" answer sent.
	OnRateLimited func(s *session.Session)
	// Encode builds typed envelopes for Session.Send.
	Encode func(typ string, payload any) ([]byte, error)
	// EncodeRequest builds the envelopes of Session.Request.
	EncodeRequest func(typ string, payload any, id string) ([]byte, error)
}

// Handler is an http.Handler that accepts WebSocket connections.
type Handler struct {
	cfg   Config
	sys   *session.System
	hooks Hooks

	stats Stats

	mu       sync.Mutex
	closed   bool
	active   int // connections being upgraded or served, until OnClose has returned
	conns    int // connections against MaxConnections: upgrading, or open until OnClose
	sessions map[string]*session.Session
	// transports names the transport of each session not on a WebSocket.
	transports map[string]string
	kick       chan struct{} // closed when the counts change, for Shutdown and Close waiting

	// inCallback counts the connections running a callback now (OnOpen,
	// OnFrame, OnRateLimited, OnClose), which Close does not wait for;
	// stopping is set with closed, after which its changes kick the
	// waiting Shutdown and Close calls.
	inCallback atomic.Int64
	stopping   atomic.Bool

	pool gopool.Pool // the workers (workers.go)
	poll *poller     // holds idle connections (poller_linux.go)

	// fallback: coder/websocket failed the reader check (adoption.go), so
	// connections are read without the idle-read machinery.
	fallback bool

	streams streams // the HTTP fallback's sessions (sse.go)
}

// NewHandler returns a handler whose sessions live in sys.
func NewHandler(sys *session.System, cfg Config, hooks Hooks) (*Handler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, sys: sys, hooks: hooks, sessions: make(map[string]*session.Session)}
	h.poll = newPoller()
	if err := readerCheck(); err != nil {
		h.fallback = true
		cfg.Logger.Warn("troupe: this coder/websocket does not read frames through the reader the connection is hijacked with; "+
			"serving connections without the idle-read optimisation (each idle connection keeps a goroutine and net/http's read buffer)",
			"err", err)
	}
	return h, nil
}

// Config returns the settings in effect, defaults applied.
func (h *Handler) Config() Config { return h.cfg }

// ServeHTTP upgrades the request and serves the connection until it closes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if token, ok := isSSE(r); ok {
		h.serveSSE(w, r, token)
		return
	}
	if refusal := h.admit(); refusal != "" {
		h.stats.refused(http.StatusServiceUnavailable)
		http.Error(w, refusal, http.StatusServiceUnavailable)
		return
	}
	handedOff := false
	var s *session.Session
	defer func() {
		if s == nil {
			// No session: no OnClose to give the place back.
			h.mu.Lock()
			h.conns--
			h.mu.Unlock()
		}
		if !handedOff {
			h.done()
		}
	}()

	var identity string
	if h.hooks.Authorize != nil {
		id, status, err := h.authorize(r)
		if err != nil {
			if status == 0 {
				status = http.StatusUnauthorized
			}
			h.stats.refused(status)
			h.cfg.Logger.Debug("troupe: upgrade refused by Authorize", "remote", r.RemoteAddr, "status", status, "err", err)
			http.Error(w, refusalText(err, status), status)
			return
		}
		identity = id
	}

	hc := &hijackCapture{ResponseWriter: w, fallback: h.fallback, hold: isNetHTTPResponse(w), timeout: h.cfg.HandshakeTimeout}
	conn := new(wsConn)
	opts := &websocket.AcceptOptions{
		OriginPatterns:     h.cfg.OriginPatterns,
		InsecureSkipVerify: h.cfg.InsecureSkipOriginCheck,
		CompressionMode:    websocket.CompressionDisabled,
		OnPingReceived:     conn.pinged,
	}
	if !h.cfg.DisableNDJSON {
		opts.Subprotocols = []string{SubprotocolNDJSON}
	}
	ws, err := upgrade(hc, r, opts)
	if err != nil {
		if hc.status >= 400 {
			h.stats.refused(hc.status)
		}
		h.cfg.Logger.Debug("troupe: upgrade refused", "remote", r.RemoteAddr, "err", err)
		return
	}
	ws.SetReadLimit(readLimit(h.cfg.MaxMessageSize))
	conn.ws, conn.raw, conn.cork, conn.cc = ws, hc.conn, hc.cork, hc.cc
	conn.ndjson = ws.Subprotocol() == SubprotocolNDJSON
	// Compression is never offered; were an extension in force anyway,
	// frames would need more than a header of ours.
	conn.direct = hc.cork != nil && w.Header().Get("Sec-WebSocket-Extensions") == ""

	s = h.sys.NewSession(conn, session.Info{
		Header:      r.Header,
		RemoteAddr:  r.RemoteAddr,
		Subprotocol: ws.Subprotocol(),
	}, h.sessionOptions())
	if identity != "" {
		s.SetIdentity(identity)
	}

	if !h.register(s, TransportWebSocket) {
		// Shutdown began during the handshake: this session was not
		// in the list it closed, so close it here.
		_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
		session.Finish(s, session.CloseGoingAway, "server shutting down")
		return
	}

	// The read loop gets a goroutine of its own and ServeHTTP returns: the
	// net/http connection goroutine, its grown stack and its buffers are
	// then freed, which is most of what an idle connection would cost.
	handedOff = true
	go newConn(h, s, conn).readLoop()
}

// admit counts a new connection in, or says why it is refused (shutting
// down, or MaxConnections open).
func (h *Handler) admit() (refusal string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return "server shutting down"
	}
	if h.cfg.MaxConnections > 0 && h.conns >= h.cfg.MaxConnections {
		return "too many connections"
	}
	h.active++
	h.conns++
	return ""
}

// sessionOptions are the limits and hooks of every session, whatever its
// transport.
func (h *Handler) sessionOptions() session.Options {
	return session.Options{
		MaxQueuedMessages: h.cfg.MaxQueuedMessages,
		MaxQueuedBytes:    h.cfg.MaxQueuedBytes,
		WriteTimeout:      h.cfg.WriteTimeout,
		Encode:            h.hooks.Encode,
		EncodeRequest:     h.hooks.EncodeRequest,
		OnError:           h.hooks.OnError,
		OnClose:           h.onClose,
		Unsent:            &h.stats.UnsentAtClose,
		Resync:            h.cfg.resyncs(),
		MaxLag:            h.cfg.MaxLag,
	}
}

// register lists s among the open sessions, unless Shutdown or Close has
// begun (it would not close s).
func (h *Handler) register(s *session.Session, transport string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.sessions[s.ID()] = s
	if transport != TransportWebSocket {
		if h.transports == nil {
			h.transports = make(map[string]string)
		}
		h.transports[s.ID()] = transportName(transport)
	}
	return true
}

// ActiveByTransport returns how many sessions are open on each transport.
func (h *Handler) ActiveByTransport() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{TransportWebSocket: len(h.sessions) - len(h.transports)}
	for _, t := range h.transports {
		out[t]++
	}
	return out
}

// authorize runs the Authorize hook under HandshakeTimeout. A hook that
// ignores its request's context is not waited for past the deadline: the
// client is refused then, and the hook's late answer is discarded.
func (h *Handler) authorize(r *http.Request) (string, int, error) {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.HandshakeTimeout)
	defer cancel()
	type result struct {
		id     string
		status int
		err    error
	}
	done := make(chan result, 1)
	rc := r.WithContext(ctx)
	go func() {
		var res result
		defer func() {
			if p := recover(); p != nil {
				res = result{status: http.StatusInternalServerError, err: fmt.Errorf("troupe: panic in Authorize: %v", p)}
			}
			done <- res
		}()
		res.id, res.status, res.err = h.hooks.Authorize(rc)
	}()
	timedOut := typed.NewError("timeout", "authentication timed out")
	select {
	case res := <-done:
		if res.err == nil && ctx.Err() != nil {
			return "", http.StatusUnauthorized, timedOut
		}
		return res.id, res.status, res.err
	case <-ctx.Done():
		return "", http.StatusUnauthorized, timedOut
	}
}

// refusalText is the body of an upgrade Authorize refused: the status's
// own text, since an error's text can tell a client what it must not know
// (which users exist, why a token failed, a backend's address), unless the
// error is (or wraps) a *typed.Error (troupe.Error), whose Message the
// application chose for the client.
func refusalText(err error, status int) string {
	var te *typed.Error
	if errors.As(err, &te) && te.Message != "" {
		return te.Message
	}
	return http.StatusText(status)
}

// done marks one connection as finished, for Shutdown's and Close's wait.
func (h *Handler) done() {
	h.mu.Lock()
	h.active--
	h.kickLocked()
	h.mu.Unlock()
}

// enter and leave surround a callback of a connection's (OnOpen, OnFrame,
// OnRateLimited, OnClose): Close does not wait for a connection while it
// runs one. They cost an atomic add and load each, and once Shutdown or
// Close has begun, a kick.
func (h *Handler) enter() {
	h.inCallback.Add(1)
	if h.stopping.Load() {
		h.kickWaiters()
	}
}

func (h *Handler) leave() {
	h.inCallback.Add(-1)
	if h.stopping.Load() {
		h.kickWaiters()
	}
}

func (h *Handler) kickWaiters() {
	h.mu.Lock()
	h.kickLocked()
	h.mu.Unlock()
}

// kickLocked wakes the Shutdown and Close calls waiting, to look at the
// counts again.
func (h *Handler) kickLocked() {
	if h.kick != nil {
		close(h.kick)
		h.kick = nil
	}
}

// waitUntil waits until ended, called with h.mu held, reports true, or ctx
// ends. It looks at ended first: if it holds, waitUntil returns nil even
// if ctx has ended.
//
// A change of inCallback (made without h.mu) cannot slip between a look at
// the counts and the wait: the change is made before stopping is read,
// and stopping was set before the first look, so either the look sees the
// change or the change's kick, taken under h.mu, comes after the look and
// closes the channel waited on.
func (h *Handler) waitUntil(ctx context.Context, ended func() bool) error {
	for {
		h.mu.Lock()
		if ended() {
			h.mu.Unlock()
			return nil
		}
		if h.kick == nil {
			h.kick = make(chan struct{})
		}
		kick := h.kick
		h.mu.Unlock()
		select {
		case <-kick:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// rateLimited answers a message over the rate limit.
var rateLimited = wire.Error(nil, "rate_limited", "too many messages; slow down")

// call runs user code for s; a panic is reported to OnError and the session
// lives on. It reports whether fn returned normally.
func (h *Handler) call(s *session.Session, fn func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			ok = false
			s.EmitError(fmt.Errorf("troupe: panic in handler: %v", r))
		}
	}()
	fn()
	return true
}

// frame hands one message to OnFrame, like call but without a closure to
// allocate for every message.
func (h *Handler) frame(s *session.Session, binary bool, data []byte) {
	defer func() {
		if r := recover(); r != nil {
			s.EmitError(fmt.Errorf("troupe: panic in handler: %v", r))
		}
	}()
	h.hooks.OnFrame(s, binary, data)
}

func (h *Handler) onClose(s *session.Session, code int, reason string) {
	h.mu.Lock()
	// A session that was never listed never opened (Shutdown began
	// during its handshake): OnClose is only for sessions that opened.
	_, opened := h.sessions[s.ID()]
	delete(h.sessions, s.ID())
	delete(h.transports, s.ID())
	h.conns--
	h.mu.Unlock()
	if opened && h.hooks.OnClose != nil {
		h.enter()
		h.call(s, func() { h.hooks.OnClose(s, code, reason) })
		h.leave()
	}
}

// closeStatus turns the error that ended the read loop into the peer's
// close code and reason.
func closeStatus(err error) (int, string) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return int(ce.Code), ce.Reason
	}
	return session.CloseAbnormal, "connection lost"
}

// Session returns the open session with the given ID, or nil.
func (h *Handler) Session(id string) *session.Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[id]
}

// Sessions returns a snapshot of the sessions not yet closed.
func (h *Handler) Sessions() []*session.Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*session.Session, 0, len(h.sessions))
	for _, s := range h.sessions {
		out = append(out, s)
	}
	return out
}

// Shutdown stops accepting connections (upgrades are answered 503), closes
// every session with 1001 (its queued frames are written first), and waits
// until every session has ended (its OnClose has returned) or ctx ends.
// When ctx ends first, it drops the sessions left (ShutdownNow) and
// returns ctx's error at once, without waiting for them to end, as
// net/http's Server.Shutdown does. Once every session has ended it returns
// nil, even if ctx has ended too. Later calls wait in the same way.
//
// Called from a callback of one of the handler's own sessions, Shutdown
// waits for that session too, which cannot end before the callback
// returns: it returns only when ctx ends. Call it on a goroutine of its
// own there, or with a ctx that has a deadline.
func (h *Handler) Shutdown(ctx context.Context) error {
	if h.stopAccepting() {
		for _, s := range h.Sessions() {
			_ = s.CloseWith(session.CloseGoingAway, "server shutting down")
		}
	}
	defer h.stopWorkers()
	if err := h.Wait(ctx); err != nil {
		for _, s := range h.Sessions() {
			session.Drop(s, "shutdown")
		}
		return err
	}
	return nil
}

// Close stops accepting connections, drops every connection at once (no
// close handshake; OnClose reports 1006), and waits until every session
// has ended except those running a callback (OnOpen, OnFrame,
// OnRateLimited, OnClose) at that moment: each of those ends by itself
// when its callback returns. So Close may be called from a callback, where
// it does not wait for the caller's own session.
func (h *Handler) Close() {
	h.stopAccepting()
	defer h.stopWorkers()
	for _, s := range h.Sessions() {
		session.Drop(s, "shutdown")
	}
	_ = h.waitUntil(context.Background(), func() bool { return int64(h.active) <= h.inCallback.Load() })
}

// Ended reports whether no connection is left: every session has ended.
func (h *Handler) Ended() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.active == 0
}

// Wait waits until no connection is left or ctx ends.
func (h *Handler) Wait(ctx context.Context) error {
	return h.waitUntil(ctx, func() bool { return h.active == 0 })
}

// stopAccepting reports whether this call was the one that stopped it.
func (h *Handler) stopAccepting() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.closed = true
	h.stopping.Store(true)
	return true
}
