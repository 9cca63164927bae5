package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// sseServer serves a session whose streams, the first and every reopened
// one, carry what body returns and then end.
func sseServer(t *testing.T, body func(reopen bool) string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		gets.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		open := r.URL.Query().Get("sse") == "open"
		if open {
			fmt.Fprint(w, "event: session\ndata: tok\n\n")
		}
		fmt.Fprint(w, body(!open))
	}))
	t.Cleanup(srv.Close)
	return srv, &gets
}

func TestSSEEventOverReadLimitFailsWithoutReopening(t *testing.T) {
	big := "id: 1\ndata: " + strings.Repeat("x", 64) + "\n\n"
	srv, gets := sseServer(t, func(bool) string { return big })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&SSE{ReadLimit: 16}).Dial(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	err = readOrAbort(t, ctx, conn, gets)
	if err == nil || !strings.Contains(err.Error(), "over 16 bytes") {
		t.Fatalf("Read: %v, want the event over the limit", err)
	}
	if n := gets.Load(); n != 1 {
		t.Fatalf("%d GETs, want the opening one only", n)
	}
}

func TestSSEStreamThatEndsAtOnceIsReopenedWithBackoff(t *testing.T) {
	srv, gets := sseServer(t, func(bool) string { return "" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&SSE{ResumeTimeout: 500 * time.Millisecond}).Dial(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := readOrAbort(t, ctx, conn, gets); err == nil {
		t.Fatal("Read succeeded on a stream that never carries an event")
	}
	// Waits of 50, 100, 200 ms fit in the 500 ms: three reopens.
	if n := gets.Load(); n > 5 {
		t.Fatalf("%d GETs in the resume timeout, want a few with backoff", n)
	}
}

// readOrAbort reads once, failing the test if Read is still reopening
// the stream after 3 s.
func readOrAbort(t *testing.T, ctx context.Context, conn Conn, gets *atomic.Int64) error {
	t.Helper()
	read := make(chan error, 1)
	go func() {
		_, err := conn.Read(ctx)
		read <- err
	}()
	defer func() { _ = conn.Abort() }()
	select {
	case err := <-read:
		return err
	case <-time.After(3 * time.Second):
		_ = conn.Abort()
		<-read
		t.Fatalf("Read still reopening after 3 s: %d GETs", gets.Load())
		return nil
	}
}
