package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/transport"
)

// streamConn is a session of the HTTP fallback as a transport.Conn: Read
// takes the lines of the client's POSTs, Write hands events to whichever
// event stream the client has open, and keeps them until the client
// acknowledges them by reopening a stream past them (see sse.go).
type streamConn struct {
	h     *Handler
	token string

	in      chan transport.Message // the POSTs' messages, taken by Read
	posting sync.Mutex             // held by the POST being read
	dead    chan struct{}          // closed once the connection has ended
	endOnce sync.Once
	endErr  error // what Read returns once dead is closed

	mu        sync.Mutex
	events    []sseEvent // not yet acknowledged, in id order; ids are contiguous
	bytes     int        // of events' data
	next      uint64     // the id of the newest event (0: none yet)
	sent      uint64     // the newest id the current stream has written
	cur       *eventStream
	progress  chan struct{} // closed and replaced when sent, cur or events change
	closeEv   []byte        // the "close" event, once Close is called
	closeSent bool
	waiting   bool        // counted in streams.waiting
	timer     *time.Timer // the resume window, while waiting
}

type sseEvent struct {
	id     uint64
	data   []byte
	binary bool
}

func newStreamConn(h *Handler, token string) *streamConn {
	return &streamConn{
		h:        h,
		token:    token,
		in:       make(chan transport.Message),
		dead:     make(chan struct{}),
		progress: make(chan struct{}),
	}
}

// eventStream is one GET's response: the goroutine serving that request
// alone writes to it (streamConn.stream).
type eventStream struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	done <-chan struct{} // the request's context: the client went away
	kick chan struct{}   // cap 1: there is something to write

	mu       sync.Mutex
	cut      bool // writes must fail from now on
	finished bool // the handler has returned: w is no longer ours
}

// newStream makes r's response an event stream, writing nothing yet (its
// headers go out when stream starts). It fails when the ResponseWriter
// cannot bound a write by a deadline.
func newStream(w http.ResponseWriter, r *http.Request) (*eventStream, bool) {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		return nil, false
	}
	return &eventStream{w: w, rc: rc, done: r.Context().Done(), kick: make(chan struct{}, 1)}, true
}

// start writes the stream's headers.
func (st *eventStream) start() {
	hd := st.w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	st.w.WriteHeader(http.StatusOK)
}

func (st *eventStream) wake() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

// write writes p and flushes it, by deadline.
func (st *eventStream) write(p []byte, deadline time.Time) error {
	st.mu.Lock()
	if st.cut {
		st.mu.Unlock()
		return errStreamCut
	}
	_ = st.rc.SetWriteDeadline(deadline)
	st.mu.Unlock()
	if _, err := st.w.Write(p); err != nil {
		return err
	}
	return st.rc.Flush()
}

// stop makes the stream's writes fail, a blocked one at once.
func (st *eventStream) stop() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.cut && !st.finished {
		st.cut = true
		_ = st.rc.SetWriteDeadline(time.Now())
	}
	st.wake()
}

func (st *eventStream) finish() {
	st.mu.Lock()
	st.finished = true
	st.mu.Unlock()
}

var errStreamCut = errors.New("event stream cut")

// progressLocked wakes the writes waiting on the stream.
func (c *streamConn) progressLocked() {
	close(c.progress)
	c.progress = make(chan struct{})
}

// attach makes st the session's stream; it will write the events after
// id sent.
func (c *streamConn) attach(st *eventStream, sent uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attachLocked(st, sent)
}

func (c *streamConn) attachLocked(st *eventStream, sent uint64) {
	if old := c.cur; old != nil {
		old.wake() // it sees it is replaced and ends
	}
	c.cur, c.sent = st, sent
	if c.waiting {
		c.waiting = false
		c.timer.Stop()
		c.h.streams.unwait()
	}
	c.progressLocked()
	st.wake()
}

// detach forgets st, once its request ends; unless another stream
// replaced it, the session then waits for the client to come back.
func (c *streamConn) detach(st *eventStream) {
	st.finish()
	c.mu.Lock()
	if c.cur != st {
		c.mu.Unlock()
		return
	}
	c.cur = nil
	c.progressLocked()
	select {
	case <-c.dead:
		c.mu.Unlock()
		return
	default:
	}
	if !c.h.streams.wait(c.h.maxWaiting()) {
		c.mu.Unlock()
		c.end(&transport.CloseError{Code: session.CloseAbnormal, Reason: "event stream lost"})
		return
	}
	c.waiting = true
	c.timer = time.AfterFunc(c.h.cfg.StreamResumeWindow, func() {
		c.end(&transport.CloseError{Code: session.CloseAbnormal, Reason: "event stream not resumed"})
	})
	c.mu.Unlock()
}

// stream writes the session's events to st as they come, first, until the
// client goes away, another stream replaces st, or the session ends. It
// runs on st's request goroutine, attached, and starts st's response.
func (c *streamConn) stream(st *eventStream, first string) {
	defer c.detach(st)
	st.start()
	every := c.h.cfg.PingInterval
	if every <= 0 {
		every = keepaliveEvery
	}
	ping := time.NewTicker(every)
	defer ping.Stop()
	buf := append(make([]byte, 0, 512), first...)
	for {
		c.mu.Lock()
		if c.cur != st {
			c.mu.Unlock()
			return
		}
		var last uint64
		// Ids are contiguous: what follows c.sent starts at its offset.
		from := 0
		if len(c.events) > 0 && c.sent >= c.events[0].id {
			from = int(min(c.sent+1-c.events[0].id, uint64(len(c.events))))
		}
		for _, ev := range c.events[from:] {
			buf = appendEvent(buf, ev)
			last = ev.id
		}
		closing := c.closeEv
		c.mu.Unlock()
		if len(buf) > 0 {
			if err := st.write(buf, time.Now().Add(c.h.cfg.WriteTimeout)); err != nil {
				return
			}
			buf = buf[:0]
			c.mu.Lock()
			if c.cur == st && last > c.sent {
				c.sent = last
				c.progressLocked()
			}
			c.mu.Unlock()
			continue
		}
		if closing != nil {
			err := st.write(closing, time.Now().Add(closeTimeout))
			c.mu.Lock()
			c.closeSent = err == nil
			c.progressLocked()
			c.mu.Unlock()
			return
		}
		select {
		case <-st.kick:
		case <-st.done:
			return
		case <-c.dead:
			return
		case <-ping.C:
			buf = append(buf, ":\n\n"...)
		}
	}
}

// appendEvent appends ev in the event stream format.
func appendEvent(b []byte, ev sseEvent) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, ev.id, 10)
	if ev.binary {
		b = append(b, "\nevent: binary\ndata: "...)
		b = base64.StdEncoding.AppendEncode(b, ev.data)
		return append(b, "\n\n"...)
	}
	// A line break inside a message (raw text; envelopes have none) starts
	// another data line, which the client's parser joins back with "\n".
	data := ev.data
	for {
		b = append(b, "\ndata: "...)
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			b = append(b, data...)
			break
		}
		b = append(b, data[:i]...)
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(b, "\n\n"...)
}

// Write hands msgs to the stream and waits until it has written them, as
// a WebSocket write waits for the socket, by deadline. While no stream is
// open they are kept for the next one and Write returns at once, unless
// the buffer is full of events never written: then it waits for a stream
// to take some, by deadline.
func (c *streamConn) Write(msgs []transport.Message, deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		for !c.roomLocked(len(m.Data)) {
			if err := c.waitLocked(deadline); err != nil {
				return err
			}
		}
		c.next++
		c.events = append(c.events, sseEvent{id: c.next, data: m.Data, binary: m.Binary})
		c.bytes += len(m.Data)
	}
	if c.cur != nil {
		c.cur.wake()
	}
	for c.cur != nil && c.sent < c.next {
		if err := c.waitLocked(deadline); err != nil {
			return err
		}
	}
	return nil
}

// roomLocked reports whether an event of n bytes fits the buffer, making
// room by forgetting the oldest events already written. One event always
// fits an empty buffer.
func (c *streamConn) roomLocked(n int) bool {
	maxMsgs, maxBytes := c.h.cfg.MaxQueuedMessages, c.h.cfg.MaxQueuedBytes
	for len(c.events) > 0 && (len(c.events) >= maxMsgs || c.bytes+n > maxBytes) {
		if c.events[0].id > c.sent {
			return false
		}
		c.bytes -= len(c.events[0].data)
		c.events[0] = sseEvent{}
		c.events = c.events[1:]
	}
	return true
}

// waitLocked waits, c.mu released meanwhile, for the stream to progress,
// the connection to end, or deadline.
func (c *streamConn) waitLocked(deadline time.Time) error {
	p := c.progress
	c.mu.Unlock()
	t := time.NewTimer(time.Until(deadline))
	var err error
	select {
	case <-p:
	case <-c.dead:
		err = errStreamCut
	case <-t.C:
		err = os.ErrDeadlineExceeded
	}
	t.Stop()
	c.mu.Lock()
	return err
}

// resume serves a GET that reopens the session's stream.
func (c *streamConn) resume(w http.ResponseWriter, r *http.Request) {
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("last")
	}
	var last uint64
	if lastID != "" {
		n, err := strconv.ParseUint(lastID, 10, 64)
		if err != nil {
			http.Error(w, "Last-Event-ID is not an event id", http.StatusBadRequest)
			return
		}
		last = n
	}
	select {
	case <-c.dead:
		http.Error(w, errUnknownSession, http.StatusNotFound)
		return
	default:
	}
	st, ok := newStream(w, r)
	if !ok {
		http.Error(w, "event streams are not supported by this server's ResponseWriter", http.StatusNotImplemented)
		return
	}
	// The check and the attach are one critical section: until st is
	// attached from last, c.sent is the dropped stream's, and a Write
	// could forget events past last to make room.
	c.mu.Lock()
	ok = last <= c.next
	if ok {
		// Acknowledged: the client has every event up to last.
		for len(c.events) > 0 && c.events[0].id <= last {
			c.bytes -= len(c.events[0].data)
			c.events[0] = sseEvent{}
			c.events = c.events[1:]
		}
		// What follows last must all be here.
		ok = len(c.events) == 0 && last == c.next || len(c.events) > 0 && c.events[0].id == last+1
	}
	if ok {
		c.attachLocked(st, last)
	}
	c.mu.Unlock()
	if !ok {
		// Events the client never read are gone: the session cannot go
		// on without a hole. (The same 404 as an unknown token: the
		// client opens a new session, whose rooms resume with since.)
		c.end(&transport.CloseError{Code: session.CloseAbnormal, Reason: "event stream resumed past its buffer"})
		http.Error(w, errUnknownSession, http.StatusNotFound)
		return
	}
	c.stream(st, "")
}

// post serves a POST of the client's messages, one per line.
func (c *streamConn) post(w http.ResponseWriter, r *http.Request) {
	if !c.posting.TryLock() {
		// Two at once could not keep the client's order.
		http.Error(w, "one POST at a time per session", http.StatusTooManyRequests)
		return
	}
	defer c.posting.Unlock()
	body, ok := readBody(w, r, c.h.cfg.MaxMessageSize)
	if !ok {
		return
	}
	n := 0
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue
		}
		select {
		case c.in <- transport.Message{Data: line}:
			n++
		case <-c.dead:
			http.Error(w, errUnknownSession, http.StatusNotFound)
			return
		case <-r.Context().Done():
			return
		}
	}
	if n == 0 {
		http.Error(w, "no messages in the body", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Read returns the next message a POST carried.
func (c *streamConn) Read(ctx context.Context) (transport.Message, error) {
	select {
	case m := <-c.in:
		return m, nil
	case <-c.dead:
		return transport.Message{}, c.endErr
	case <-ctx.Done():
		return transport.Message{}, ctx.Err()
	}
}

// peerClosed ends the session as the client asked (DELETE).
func (c *streamConn) peerClosed(code int, reason string) {
	c.end(&transport.CloseError{Code: code, Reason: reason})
}

// closeData is the data of the "close" event.
type closeData struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// Close writes the "close" event after the events before it, if a stream
// is open (waiting at most closeTimeout), and ends the connection.
func (c *streamConn) Close(code int, reason string) error {
	data, _ := json.Marshal(closeData{Code: code, Reason: reason})
	ev := append(append([]byte("event: close\ndata: "), data...), "\n\n"...)
	deadline := time.Now().Add(closeTimeout)
	c.mu.Lock()
	c.closeEv = ev
	if c.cur != nil {
		c.cur.wake()
	}
	for c.cur != nil && !c.closeSent {
		if c.waitLocked(deadline) != nil {
			break
		}
	}
	c.mu.Unlock()
	c.end(&transport.CloseError{Code: code, Reason: reason})
	return nil
}

// CloseNow ends the connection at once.
func (c *streamConn) CloseNow() error {
	c.end(&transport.CloseError{Code: session.CloseAbnormal, Reason: "connection dropped"})
	return nil
}

// end ends the connection once: Read returns err, the token is forgotten,
// and the stream, if any, is cut.
func (c *streamConn) end(err error) {
	c.endOnce.Do(func() {
		c.endErr = err
		close(c.dead)
		c.h.streams.remove(c)
		c.mu.Lock()
		if c.waiting {
			c.waiting = false
			c.timer.Stop()
			c.h.streams.unwait()
		}
		st := c.cur
		c.mu.Unlock()
		if st != nil {
			st.stop()
		}
	})
}
