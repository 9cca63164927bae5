package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// SSE is the Transport of the server's HTTP fallback, for networks whose
// proxies refuse WebSocket upgrades: the server's envelopes arrive on a
// Server-Sent Events stream, the client's leave in POSTs, one envelope per
// POST. A dropped stream is reopened within the same session with the id
// of the last event read, so nothing is lost or repeated; the session is
// lost only if it cannot be reopened within ResumeTimeout (the server
// holds it for its StreamResumeWindow, 15 s by default).
//
// The URL is the server's WebSocket URL (ws:// or wss://, or http:// and
// https://): the fallback is served by the same handler, on the same path.
type SSE struct {
	// HTTPClient makes the requests. Nil: a client of its own per dial,
	// with no overall timeout (a stream lasts as long as the session).
	HTTPClient *http.Client
	// Header is sent with every request (a cookie, a token).
	Header http.Header
	// ResumeTimeout bounds the attempts to reopen a dropped stream
	// (default 10 s).
	ResumeTimeout time.Duration
	// ReadLimit is the largest event accepted from the server in bytes.
	// Zero means 16 MiB; negative means no limit.
	ReadLimit int64
}

// ErrSessionGone is what a connection of the HTTP fallback reports when
// the server no longer knows its session (it closed it, or the stream was
// not reopened in time); the client reconnects with a new one.
var ErrSessionGone = errors.New("troupe client: session unknown to the server")

// CloseError is how the server closed a connection of the HTTP fallback:
// the code and reason a WebSocket close frame would have carried.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("troupe client: closed by the server: %d %s", e.Code, e.Reason)
}

// Dial opens a session of the HTTP fallback at rawURL.
func (t *SSE) Dial(ctx context.Context, rawURL string) (Conn, error) {
	base, err := httpURL(rawURL)
	if err != nil {
		return nil, err
	}
	hc := t.HTTPClient
	var own *http.Transport
	if hc == nil {
		own = &http.Transport{Proxy: http.ProxyFromEnvironment}
		hc = &http.Client{Transport: own}
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &sseConn{t: t, hc: hc, own: own, base: base, ctx: cctx, cancel: cancel, limit: t.ReadLimit}
	if c.limit == 0 {
		c.limit = defaultReadLimit
	}
	// ctx bounds the handshake only: the stream's request lives on the
	// connection's own context.
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	body, err := c.get(withQuery(base, "sse", "open"), "")
	if err == nil {
		c.setBody(body)
		var ev sseEvent
		ev, err = c.next()
		if err == nil && ev.event != "session" {
			err = fmt.Errorf("troupe client: the event stream began with %q, not a session", ev.event)
		}
		c.token = string(ev.data)
	}
	if err != nil {
		_ = c.Abort()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return c, nil
}

// httpURL turns a ws:// or wss:// URL into its http:// or https:// form.
func httpURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return nil, fmt.Errorf("troupe client: %q: the scheme must be ws, wss, http or https", raw)
	}
	return u, nil
}

func withQuery(base *url.URL, kv ...string) string {
	u := *base
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

type sseEvent struct {
	event string
	id    string
	data  []byte
}

type sseConn struct {
	t      *SSE
	hc     *http.Client
	own    *http.Transport // made for this connection: its idle connections go with it
	base   *url.URL
	token  string
	ctx    context.Context // ends with the connection
	cancel context.CancelFunc
	limit  int64

	// Read's side.
	mu     sync.Mutex // guards body against Close
	body   io.ReadCloser
	br     *bufio.Reader
	lastID string
	// The drop being resumed: its deadline and the wait before the next
	// reopen, kept until an event has been read, so a stream that opens
	// and ends at once is retried with backoff and within the deadline.
	dropDeadline time.Time
	dropDelay    time.Duration
}

// errTooLarge is an event over ReadLimit: reopening the stream would
// receive the same event again, so the connection fails instead.
type errTooLarge int64

func (e errTooLarge) Error() string {
	return fmt.Sprintf("troupe client: event over %d bytes", int64(e))
}

func (c *sseConn) setBody(body io.ReadCloser) {
	c.mu.Lock()
	c.body = body
	c.br = bufio.NewReader(body)
	c.mu.Unlock()
}

func (c *sseConn) closeBody() {
	c.mu.Lock()
	if c.body != nil {
		_ = c.body.Close()
	}
	c.mu.Unlock()
}

// get opens an event stream.
func (c *sseConn) get(u, lastID string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	c.header(req)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		err := statusError(resp)
		_ = resp.Body.Close()
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("troupe client: the server answered %q, not an event stream", ct)
	}
	return resp.Body, nil
}

func (c *sseConn) header(req *http.Request) {
	for k, v := range c.t.Header {
		req.Header[k] = v
	}
}

// statusError describes a refused request; 404 is ErrSessionGone.
func statusError(resp *http.Response) error {
	text, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	msg := strings.TrimSpace(string(text))
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w (%s)", ErrSessionGone, msg)
	}
	return fmt.Errorf("troupe client: %s: %s", resp.Status, msg)
}

// next parses the next event (comments and events without data skipped,
// except "session" and "close").
func (c *sseConn) next() (sseEvent, error) {
	var ev sseEvent
	var data bytes.Buffer
	hasData := false
	for {
		line, err := c.line()
		if err != nil {
			return ev, err
		}
		if len(line) == 0 {
			if hasData || ev.event == "close" {
				ev.data = data.Bytes()
				return ev, nil
			}
			ev = sseEvent{}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			ev.event = string(value)
		case "id":
			ev.id = string(value)
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			hasData = true
			if c.limit > 0 && int64(data.Len()+len(value)) > c.limit {
				return ev, errTooLarge(c.limit)
			}
			data.Write(value)
		}
	}
}

// line reads one line, without its terminator, of at most limit bytes.
func (c *sseConn) line() ([]byte, error) {
	var long []byte
	for {
		part, err := c.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long, part...)
			if c.limit > 0 && int64(len(long)) > c.limit {
				return nil, errTooLarge(c.limit)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if long != nil {
			part = append(long, part...)
		}
		part = bytes.TrimSuffix(part[:len(part)-1], []byte("\r"))
		return part, nil
	}
}

// Read returns the data of the next event, reopening the stream within
// the session when it drops.
func (c *sseConn) Read(context.Context) ([]byte, error) {
	for {
		ev, err := c.next()
		if err == nil {
			c.dropDeadline = time.Time{}
			switch ev.event {
			case "", "message":
				if ev.id != "" {
					c.lastID = ev.id
				}
				return ev.data, nil
			case "close":
				var ce CloseError
				_ = json.Unmarshal(ev.data, &ce)
				return nil, &ce
			default:
				if ev.id != "" {
					c.lastID = ev.id // "binary": not an envelope, but read
				}
				continue
			}
		}
		if c.ctx.Err() != nil {
			return nil, net.ErrClosed
		}
		var tl errTooLarge
		if errors.As(err, &tl) {
			return nil, err
		}
		if rerr := c.resume(); rerr != nil {
			return nil, fmt.Errorf("%w (after the stream ended: %v)", rerr, err)
		}
	}
}

// resume reopens the stream after the last event read, trying for
// ResumeTimeout from the drop and waiting before every reopen: a stream
// that opens and ends at once counts as the same drop until an event is
// read from it.
func (c *sseConn) resume() error {
	c.closeBody()
	if c.dropDeadline.IsZero() {
		timeout := c.t.ResumeTimeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		c.dropDeadline = time.Now().Add(timeout)
		c.dropDelay = 50 * time.Millisecond
	}
	for {
		if time.Now().Add(c.dropDelay).After(c.dropDeadline) {
			return errors.New("troupe client: the event stream was not reopened in time")
		}
		select {
		case <-time.After(c.dropDelay):
		case <-c.ctx.Done():
			return net.ErrClosed
		}
		c.dropDelay = min(c.dropDelay*2, time.Second)
		body, err := c.get(withQuery(c.base, "sse", c.token), c.lastID)
		if err == nil {
			c.setBody(body)
			return nil
		}
		if errors.Is(err, ErrSessionGone) || c.ctx.Err() != nil || time.Now().Add(c.dropDelay).After(c.dropDeadline) {
			return err
		}
	}
}

// Write POSTs one envelope.
func (c *sseConn) Write(ctx context.Context, msg []byte) error {
	return c.send(ctx, http.MethodPost, msg)
}

func (c *sseConn) send(ctx context.Context, method string, body []byte) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	unlink := context.AfterFunc(c.ctx, cancel)
	defer unlink()
	req, err := http.NewRequestWithContext(rctx, method, withQuery(c.base, "sse", c.token), bytes.NewReader(body))
	if err != nil {
		return err
	}
	c.header(req)
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return statusError(resp)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return nil
}

// Batched is false: every event is one envelope.
func (c *sseConn) Batched() bool { return false }

// Close ends the session (DELETE, bounded by 2 s) and the stream.
func (c *sseConn) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.send(ctx, http.MethodDelete, nil)
	_ = c.Abort()
	if errors.Is(err, ErrSessionGone) {
		return nil
	}
	return err
}

// Abort drops the stream; the server's session ends when its resume window
// does.
func (c *sseConn) Abort() error {
	c.cancel()
	c.closeBody()
	if c.own != nil {
		c.own.CloseIdleConnections()
	}
	return nil
}

// Fallback is a Transport that uses a WebSocket where it can and the HTTP
// fallback where it cannot: each dial tries the WebSocket first, and if its
// upgrade fails, opens an SSE session instead. While on the fallback it
// tries a WebSocket again every RetryWebSocket, and once one opens, it ends
// the fallback connection, so that the client reconnects over WebSocket
// (rooms resume with since, as after any reconnect).
type Fallback struct {
	// WebSocket and SSE are the two transports; nil: their zero values.
	WebSocket *WebSocket
	SSE       *SSE
	// WebSocketTimeout bounds the WebSocket attempt of each dial, so that
	// a proxy that swallows upgrades leaves time for the fallback (default
	// 3 s, and at most half of the dial's own time).
	WebSocketTimeout time.Duration
	// RetryWebSocket is how often a fallback connection checks whether a
	// WebSocket would open now (default 30 s; negative: never, the
	// fallback then lasts until the next reconnect).
	RetryWebSocket time.Duration
}

// Dial connects to url over WebSocket, or over the HTTP fallback if the
// WebSocket cannot be opened.
func (f *Fallback) Dial(ctx context.Context, url string) (Conn, error) {
	ws := f.WebSocket
	if ws == nil {
		ws = &WebSocket{}
	}
	wsTimeout := f.WebSocketTimeout
	if wsTimeout <= 0 {
		wsTimeout = 3 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok {
		wsTimeout = min(wsTimeout, time.Until(dl)/2)
	}
	wctx, cancel := context.WithTimeout(ctx, wsTimeout)
	conn, wsErr := ws.Dial(wctx, url)
	cancel()
	if wsErr == nil {
		return conn, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	sse := f.SSE
	if sse == nil {
		sse = &SSE{}
	}
	c, err := sse.Dial(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("websocket: %v; http fallback: %w", wsErr, err)
	}
	every := f.RetryWebSocket
	if every == 0 {
		every = 30 * time.Second
	}
	if every > 0 {
		sc := c.(*sseConn)
		go sc.probe(ws, url, every, wsTimeout)
	}
	return c, nil
}

// probe tries a WebSocket every interval while c lives; once one opens, it
// closes it and drops c, for the client to reconnect over WebSocket.
func (c *sseConn) probe(ws *WebSocket, url string, every, timeout time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		conn, err := ws.Dial(ctx, url)
		cancel()
		if err == nil {
			_ = conn.Close()
			_ = c.Close()
			return
		}
	}
}
