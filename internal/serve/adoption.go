package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Reading between messages outside coder/websocket's Read (idle.go) is only
// correct if coder/websocket reads its frames through the bufio.Reader that
// Hijack returns (hijackCapture.Hijack), with no buffer of its own between
// that reader and its frame parser. Then every byte taken from the socket
// and not yet parsed is in that reader or under it, where ready sees it, and
// the empty message the frame reader serves after control frames arrives
// at a frame boundary. coder/websocket v1.8 does so (Accept peeks at the
// hijacked reader, resets it and keeps it), but does not document it: a
// version that built a reader of its own over the connection would leave
// bytes where ready cannot see them, and the empty message could land
// inside a payload without any error.
//
// So a handler checks it once per process, on a connection in memory
// (checkAdoption), and where it does not hold serves every connection
// without that machinery: coder/websocket gets net/http's own reader, the
// read loop waits inside Read, and nothing is parked in the poller. The
// check costs a connection nothing: NewHandler stores its outcome, and
// ServeHTTP reads that boolean.

var (
	adoptionOnce sync.Once
	adoptionErr  error
)

// readerCheck reports why coder/websocket cannot be relied on to read
// through the reader Hijack returns, or nil if it can. It runs the check
// once per process. Tests replace it.
var readerCheck = func() error {
	adoptionOnce.Do(func() { adoptionErr = checkAdoption(websocket.Accept) })
	return adoptionErr
}

// acceptFunc is websocket.Accept's signature, so that tests can stand in a
// coder/websocket that behaves otherwise.
type acceptFunc func(http.ResponseWriter, *http.Request, *websocket.AcceptOptions) (*websocket.Conn, error)

// upgrade is what ServeHTTP upgrades connections with. Tests replace it.
var upgrade acceptFunc = websocket.Accept

// adoptionReaderSize is the size of the reader checkAdoption hands over: it
// holds the frames the client writes at once, so that where they end up
// after the first one is parsed tells who buffered them.
const adoptionReaderSize = 64

// checkAdoption upgrades a connection in memory (net.Pipe) with accept and
// checks that frames are read through the bufio.Reader Hijack returned:
// a frame buffered in it at the upgrade (as net/http holds what a client
// sends right behind the handshake) is read first, and after a message
// that came in one write with the next, the next frame's bytes wait in
// that reader, all of them; nowhere else. Both messages must read back
// whole. It returns what did not hold.
func checkAdoption(accept acceptFunc) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	srv, cli := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	_ = srv.SetDeadline(deadline)
	_ = cli.SetDeadline(deadline)

	early, first, second := clientTextFrame("early"), clientTextFrame("one"), clientTextFrame("two")
	ours := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(early), srv), adoptionReaderSize)
	if _, err := ours.Peek(len(early)); err != nil {
		return err
	}
	w := &adoptionWriter{header: http.Header{}, conn: srv,
		brw: bufio.NewReadWriter(ours, bufio.NewWriter(srv))}

	// The client side: whatever the server writes is discarded.
	drained := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, cli)
		close(drained)
	}()
	var wrote chan error // the client's write, once started
	defer func() {
		_ = srv.Close()
		_ = cli.Close()
		<-drained
		if wrote == nil {
			return
		}
		if werr := <-wrote; err == nil && werr != nil {
			err = fmt.Errorf("client write: %w", werr)
		}
	}()

	r := &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: "/"},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Host:       "troupe.invalid",
		Header: http.Header{
			"Connection":            {"Upgrade"},
			"Upgrade":               {"websocket"},
			"Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key":     {base64.StdEncoding.EncodeToString([]byte("troupe-check-key"))},
		},
	}
	r = r.WithContext(context.Background())
	ws, err := accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	defer func() { _ = ws.CloseNow() }()

	wrote = make(chan error, 1)
	go func() {
		_, err := cli.Write(append(append([]byte(nil), first...), second...))
		wrote <- err
	}()

	read := func(want string) error {
		_, got, err := ws.Read(context.Background())
		if err != nil {
			return fmt.Errorf("reading %q: %w", want, err)
		}
		if string(got) != want {
			return fmt.Errorf("read %q, want %q", got, want)
		}
		return nil
	}
	if err := read("early"); err != nil {
		return fmt.Errorf("the frame buffered in the hijacked reader: %w", err)
	}
	if err := read("one"); err != nil {
		return err
	}
	if n := ours.Buffered(); n != len(second) {
		return fmt.Errorf("after a message, the hijacked reader holds %d bytes of the next frame, want all %d: frames are not read through it", n, len(second))
	}
	if err := read("two"); err != nil {
		return err
	}
	if !w.hijacked {
		return errors.New("the connection was not hijacked")
	}
	return nil
}

// clientTextFrame is a final text frame as a client sends it (masked), with
// a payload under 126 bytes.
func clientTextFrame(payload string) []byte {
	key := [4]byte{0x5a, 0x13, 0xc7, 0x81}
	out := append([]byte{0x81, 0x80 | byte(len(payload))}, key[:]...)
	for i := range len(payload) {
		out = append(out, payload[i]^key[i%4])
	}
	return out
}

// adoptionWriter is the ResponseWriter of checkAdoption's upgrade: Hijack
// hands over the connection and the reader under test.
type adoptionWriter struct {
	header   http.Header
	conn     net.Conn
	brw      *bufio.ReadWriter
	hijacked bool
}

func (w *adoptionWriter) Header() http.Header         { return w.header }
func (w *adoptionWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *adoptionWriter) WriteHeader(int)             {}

func (w *adoptionWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	return w.conn, w.brw, nil
}
