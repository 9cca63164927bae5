package serve

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/transport"
)

// hookedWriter is a ResponseWriter that can bound writes by a deadline and
// runs onHeader when the response's headers are written.
type hookedWriter struct {
	header   http.Header
	onHeader func()
	mu       sync.Mutex
	body     bytes.Buffer
	wrote    chan struct{} // cap 1: the body grew
}

func (w *hookedWriter) Header() http.Header { return w.header }
func (w *hookedWriter) WriteHeader(int) {
	if f := w.onHeader; f != nil {
		w.onHeader = nil
		f()
	}
}
func (w *hookedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.body.Write(p)
	w.mu.Unlock()
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}
func (w *hookedWriter) Flush()                           {}
func (w *hookedWriter) SetWriteDeadline(time.Time) error { return nil }
func (w *hookedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.String()
}

// TestResumeKeepsWhatFollowsLast checks that a resumed stream starts at
// the event after the client's last one even when the session writes
// while the stream is being opened: the events the dropped stream had
// written past last are the client's to read again, and must not be
// forgotten to make room for new ones (the client would read 5 after 2,
// with nothing to tell it 3 and 4 are gone).
func TestResumeKeepsWhatFollowsLast(t *testing.T) {
	h := &Handler{cfg: Config{Limits: Limits{MaxQueuedMessages: 2, StreamResumeWindow: time.Minute}}.withDefaults()}
	c := newStreamConn(h, "t")
	defer c.CloseNow()
	// The dropped stream wrote events 1 to 4; the client read up to 2.
	for id := uint64(1); id <= 4; id++ {
		c.events = append(c.events, sseEvent{id: id, data: []byte{'0' + byte(id)}})
		c.bytes++
	}
	c.next, c.sent = 4, 4

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
	r.Header.Set("Last-Event-ID", "2")
	w := &hookedWriter{header: http.Header{}, wrote: make(chan struct{}, 1)}
	// While the new stream's response starts, the session writes event 5
	// into a full buffer (bounded: it may wait for the stream).
	w.onHeader = func() {
		_ = c.Write([]transport.Message{{Data: []byte("5")}}, time.Now().Add(50*time.Millisecond))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.resume(w, r)
	}()
	select {
	case <-w.wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("the resumed stream wrote nothing")
	}
	cancel()
	<-done
	got := w.String()
	if !strings.HasPrefix(got, "id: 3\n") {
		t.Fatalf("resumed after 2, the stream began with\n%s\nwant event 3 first", got)
	}
}
