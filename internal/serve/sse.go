package serve

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/transport"
)

// The HTTP fallback, for clients whose WebSocket upgrade a proxy refuses:
// the server's messages go down a Server-Sent Events stream, the client's
// go up in POSTs. It is mounted by the same handler as the WebSocket, on
// the same path, told apart by the "sse" query parameter:
//
//	GET    <path>?sse=open             open a session; Authorize runs on this
//	                                   request; the response is its event stream
//	GET    <path>?sse=<token>&last=<n> reopen the stream of a session after a
//	                                   drop (Last-Event-ID: n works as well)
//	POST   <path>?sse=<token>          the client's envelopes, one per line
//	DELETE <path>?sse=<token>          the client closes the session (1000)
//
// The stream's first event is "session", whose data is the token: 32
// random bytes from crypto/rand, the session's only credential after the
// opening request. Every message after it is one event whose id counts up
// from 1 and whose data is one envelope; a binary message is an event
// "binary" carrying base64. When this side closes the session, a last
// event "close" carries {"code","reason"} as a close frame would; a dropped
// session (a slow consumer's 1013 included) has none: its stream ends, and
// its token is then unknown (404), which tells the client to open anew.
//
// A dropped stream leaves the session waiting StreamResumeWindow for the
// client to reopen it with the id of the last event it read; the events
// after it are sent again, from a buffer of the events not yet
// acknowledged (an id the client reopens with acknowledges it and every
// earlier one), bounded like the session's queue (MaxQueuedMessages,
// MaxQueuedBytes). Reopening with an id older than the buffer holds closes
// the session and answers 404: nothing is skipped in silence.
//
// The origin check applies to every request, and the rate limit to every
// message a POST carries, as on a WebSocket. A POST body is at most
// MaxMessageSize (413 beyond), one POST at a time per session (429 for a
// second one meanwhile). Every unknown or closed token gets the same 404.

// sseParam is the query parameter that marks the fallback's requests.
const sseParam = "sse"

// sseOpen is the value of sseParam that opens a session.
const sseOpen = "open"

// errUnknownSession is the one answer for a token that names no session.
const errUnknownSession = "unknown session"

// isSSE reports whether r is a request of the HTTP fallback. Looking costs
// nothing for an upgrade without a query.
func isSSE(r *http.Request) (token string, ok bool) {
	if r.URL.RawQuery == "" {
		return "", false
	}
	q := r.URL.Query()
	if !q.Has(sseParam) {
		return "", false
	}
	return q.Get(sseParam), true
}

// serveSSE answers a request of the HTTP fallback.
func (h *Handler) serveSSE(w http.ResponseWriter, r *http.Request, token string) {
	if h.cfg.DisableStreams {
		http.NotFound(w, r)
		return
	}
	if err := h.checkOrigin(r); err != nil {
		h.cfg.Logger.Debug("troupe: stream request refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
		return
	}
	if r.Method == http.MethodGet && token == sseOpen {
		h.openStream(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	c := h.streams.get(token)
	if c == nil {
		http.Error(w, errUnknownSession, http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodGet:
		c.resume(w, r)
	case http.MethodPost:
		c.post(w, r)
	case http.MethodDelete:
		c.peerClosed(session.CloseNormal, "")
		w.WriteHeader(http.StatusNoContent)
	}
}

// openStream opens a session for r and serves its event stream.
func (h *Handler) openStream(w http.ResponseWriter, r *http.Request) {
	if refusal := h.admit(); refusal != "" {
		h.stats.refused(http.StatusServiceUnavailable)
		http.Error(w, refusal, http.StatusServiceUnavailable)
		return
	}
	served := false
	defer func() {
		if !served {
			h.mu.Lock()
			h.conns--
			h.mu.Unlock()
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
			h.cfg.Logger.Debug("troupe: stream refused by Authorize", "remote", r.RemoteAddr, "status", status, "err", err)
			http.Error(w, refusalText(err, status), status)
			return
		}
		identity = id
	}
	st, ok := newStream(w, r)
	if !ok {
		// A wrapper around the ResponseWriter hides Flush or the write
		// deadline: without them a stream could neither deliver nor be
		// bounded.
		http.Error(w, "event streams are not supported by this server's ResponseWriter", http.StatusNotImplemented)
		return
	}
	token, err := newToken()
	if err != nil {
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	c := newStreamConn(h, token)
	h.streams.add(c)
	served = true
	go func() {
		_ = h.serveAdmitted(context.Background(), c, transport.Info{
			Header:     r.Header,
			RemoteAddr: r.RemoteAddr,
			Transport:  TransportSSE,
			Identity:   identity,
		})
	}()
	c.attach(st, 0)
	c.stream(st, "event: session\ndata: "+token+"\n\n")
}

// newToken returns a session token: 32 bytes of crypto/rand, base64url.
func newToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// checkOrigin applies the WebSocket's origin rule to a request of the
// fallback (coder/websocket's rule, which it does not export): no Origin
// (not a browser) or the request's own host passes, and so does a host
// matching one of OriginPatterns (path.Match; a pattern with "://" is
// matched against scheme://host).
func (h *Handler) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" || h.cfg.InsecureSkipOriginCheck {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil {
		return err
	}
	if strings.EqualFold(r.Host, u.Host) {
		return nil
	}
	for _, p := range h.cfg.OriginPatterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return nil
		}
	}
	return errors.New("origin " + strconv.Quote(origin) + " not allowed")
}

// streams is the registry of the fallback's sessions by token, and the
// count of those waiting for their client to reopen a stream.
type streams struct {
	mu      sync.Mutex
	byToken map[string]*streamConn
	waiting int
}

func (s *streams) get(token string) *streamConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byToken[token]
}

func (s *streams) add(c *streamConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byToken == nil {
		s.byToken = make(map[string]*streamConn)
	}
	s.byToken[c.token] = c
}

func (s *streams) remove(c *streamConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byToken, c.token)
}

// wait counts a session in among those waiting for a stream, unless max
// already are.
func (s *streams) wait(max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting >= max {
		return false
	}
	s.waiting++
	return true
}

func (s *streams) unwait() {
	s.mu.Lock()
	s.waiting--
	s.mu.Unlock()
}

// maxWaiting is how many sessions may wait for their stream at once: a
// quarter of MaxConnections (1000 without that limit). A client can open a
// session and drop its stream in two requests, so without this bound one
// client could hold every place for a resume window; past it, a session
// whose stream drops closes at once.
func (h *Handler) maxWaiting() int {
	if h.cfg.MaxConnections > 0 {
		return max(h.cfg.MaxConnections/4, 1)
	}
	return 1000
}

// TransportSSE and TransportWebSocket name the transports in metrics.
const (
	TransportWebSocket = "websocket"
	TransportSSE       = "sse"
)

// readBody reads a POST body of at most limit bytes; ok is false, and the
// answer sent, when it is longer or cut short.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		http.Error(w, "request body over "+strconv.FormatInt(limit, 10)+" bytes", http.StatusRequestEntityTooLarge)
		return nil, false
	case err != nil:
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	return body, true
}

// keepaliveEvery is the stream's comment line interval when pings are
// off: often enough for proxies that cut a silent response.
const keepaliveEvery = 30 * time.Second
