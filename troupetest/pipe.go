package troupetest

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/transport"
)

// Pipe connects a new client to srv in memory: no listener, no socket, no
// HTTP. The server serves the connection as it serves a WebSocket
// (troupe.Server.ServeConn): OnOpen, handlers, rooms and OnClose run as
// they would, but Config.Authorize does not, the session's Header is empty
// and its RemoteAddr is "pipe". Messages arrive in the order the server
// wrote them, and the client never pushes back on the server.
//
// The client is closed at the test's cleanup, which waits for the server
// to have finished with the connection (OnClose has returned). The caller
// owns srv and closes it.
func Pipe(t testing.TB, srv *troupe.Server) *Client {
	t.Helper()
	return pipe(t, srv)
}

func pipe(t testing.TB, cs connServer) *Client {
	c := newClient(t, "pipe")
	p := &pipeConn{c: c, changed: make(chan struct{}), served: make(chan struct{})}
	c.conn = pipeClient{p}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	info := transport.Info{Header: http.Header{}, RemoteAddr: "pipe", Transport: "pipe"}
	go func() {
		defer close(p.served)
		err := cs.ServeConn(ctx, p, info)
		// However the session ended, the client end has too.
		c.end(1006, "", errors.Join(errors.New("the server stopped serving the connection"), err))
	}()
	t.Cleanup(c.cleanup)
	return c
}

// connServer is what Pipe needs of a troupe.Server.
type connServer interface {
	ServeConn(ctx context.Context, c transport.Conn, info transport.Info) error
}

// errDropped is what Read and Write return once the connection was dropped
// or closed.
var errDropped = errors.New("troupetest: pipe closed")

// pipeConn is the server's end of a Pipe, the transport.Conn it serves.
// Messages to the client go straight into the client's queue; messages
// from the client wait in in until the session reads them.
type pipeConn struct {
	c      *Client
	cancel context.CancelFunc // of ServeConn's context
	served chan struct{}      // closed when ServeConn has returned

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when in or the state changes
	in      [][]byte
	// clientEnd is set when the client closed (a *transport.CloseError)
	// or dropped (errDropped) its end.
	clientEnd error
	// serverEnd is set when the server closed (a *transport.CloseError,
	// what a client answers to a close) or dropped (errDropped) its end.
	serverEnd error
}

var _ transport.Conn = (*pipeConn)(nil)

func (p *pipeConn) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Read returns the client's next message; once the client closed, what it
// sent before its close comes first.
func (p *pipeConn) Read(ctx context.Context) (transport.Message, error) {
	for {
		p.mu.Lock()
		if p.serverEnd != nil {
			err := p.serverEnd
			p.mu.Unlock()
			return transport.Message{}, err
		}
		if len(p.in) > 0 {
			data := p.in[0]
			p.in[0] = nil
			p.in = p.in[1:]
			p.mu.Unlock()
			return transport.Message{Data: data}, nil
		}
		if p.clientEnd != nil {
			err := p.clientEnd
			p.mu.Unlock()
			return transport.Message{}, err
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return transport.Message{}, ctx.Err()
		}
	}
}

// Write hands msgs to the client at once: it never blocks.
func (p *pipeConn) Write(msgs []transport.Message, _ time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.serverEnd != nil || p.clientEnd != nil {
		return errDropped
	}
	for _, m := range msgs {
		p.c.deliver(m.Data, m.Binary)
	}
	return nil
}

// Close ends the connection as a WebSocket close handshake would: the
// client sees code and reason, and the session's Read returns them.
func (p *pipeConn) Close(code int, reason string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.serverEnd != nil {
		return errDropped
	}
	p.serverEnd = &transport.CloseError{Code: code, Reason: reason}
	p.notifyLocked()
	if p.clientEnd == nil {
		p.c.end(code, reason, nil)
	}
	return nil
}

// CloseNow drops the connection: the client sees 1006.
func (p *pipeConn) CloseNow() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.serverEnd == nil {
		p.serverEnd = errDropped
		p.notifyLocked()
	}
	p.c.end(1006, "", errors.New("the server dropped the connection"))
	return nil
}

// pipeClient is the client's end of a Pipe.
type pipeClient struct{ p *pipeConn }

func (e pipeClient) write(data []byte) error {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.clientEnd != nil {
		return errors.New("troupetest: write after Close")
	}
	if p.serverEnd != nil {
		return errors.New("troupetest: the server closed the connection")
	}
	p.in = append(p.in, data)
	p.notifyLocked()
	return nil
}

// close sends the client's close; the session reads it after the messages
// sent before, and ends. It returns once the server has finished.
func (e pipeClient) close(code int, reason string) error {
	p := e.p
	p.mu.Lock()
	if p.clientEnd == nil {
		p.clientEnd = &transport.CloseError{Code: code, Reason: reason}
		p.notifyLocked()
	}
	p.mu.Unlock()
	select {
	case <-p.served:
		return nil
	case <-time.After(wait):
		return errors.New("troupetest: the server did not end the session")
	}
}

// closeNow drops the client's end and waits for the server to finish with
// the connection.
func (e pipeClient) closeNow() {
	p := e.p
	p.mu.Lock()
	if p.clientEnd == nil {
		p.clientEnd = errDropped
		p.notifyLocked()
	}
	p.mu.Unlock()
	select {
	case <-p.served:
	case <-time.After(wait):
		// Last resort, so that no goroutine outlives the test.
		p.cancel()
		<-p.served
		p.c.t.Errorf("troupetest: pipe: the server still served the connection %v after the client dropped it", wait)
	}
	p.cancel()
}
