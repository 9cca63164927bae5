package serve

import (
	"context"
	"errors"
	"net/http"

	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/transport"
)

// ErrRefused is what ServeConn returns for a connection it did not serve:
// the server is shutting down, or MaxConnections are open.
var ErrRefused = errors.New("troupe: connection refused (server shutting down, or too many connections)")

// ServeConn serves tc, a connection of another transport, as a session, as
// ServeHTTP does a WebSocket: the same limits, callbacks, registry and
// shutdown. It reads on the calling goroutine and returns once the session
// has ended and its OnClose has returned; it returns ErrRefused at once
// when the handler is shutting down or full. ctx ending closes the session
// with 1001.
//
// What a WebSocket gets from coder/websocket, ServeConn does itself: a
// message over MaxMessageSize closes the session with 1009, and the idle
// timeout applies. Pings are the transport's own business.
func (h *Handler) ServeConn(ctx context.Context, tc transport.Conn, info transport.Info) error {
	if h.admit() != "" {
		h.stats.refused(http.StatusServiceUnavailable)
		return ErrRefused
	}
	return h.serveAdmitted(ctx, tc, info)
}

// serveAdmitted is ServeConn for a connection admit has counted in.
func (h *Handler) serveAdmitted(ctx context.Context, tc transport.Conn, info transport.Info) error {
	s := h.sys.NewSession(tc, session.Info{
		Header:      info.Header,
		RemoteAddr:  info.RemoteAddr,
		Subprotocol: info.Subprotocol,
	}, h.sessionOptions())
	if info.Identity != "" {
		s.SetIdentity(info.Identity)
	}
	if !h.register(s, info.Transport) {
		_ = tc.Close(session.CloseGoingAway, "server shutting down")
		session.Finish(s, session.CloseGoingAway, "server shutting down")
		h.done()
		return ErrRefused
	}
	c := newConn(h, s, nil)
	c.ended = make(chan struct{})
	stop := context.AfterFunc(ctx, func() { _ = s.CloseWith(session.CloseGoingAway, "connection context ended") })
	defer stop()
	h.stats.opened(info.Transport)
	if h.hooks.OnOpen != nil && !c.open() {
		// The session's writer closes tc; Read then fails and ends the
		// loop below. Nothing read meanwhile is handled (received drops
		// messages of a session that is closing).
		_ = s.CloseWith(session.CloseInternalError, "open handler failed")
	}
	for {
		m, err := tc.Read(s.Context())
		if err != nil {
			code, reason := session.CloseAbnormal, "connection lost"
			var ce *transport.CloseError
			if errors.As(err, &ce) {
				code, reason = ce.Code, ce.Reason
			}
			c.end(code, reason)
			break
		}
		if int64(len(m.Data)) > h.cfg.MaxMessageSize {
			// Closed through the session, which alone may write to tc;
			// reading goes on until tc reports the end.
			_ = s.CloseWith(session.CloseMessageTooBig, "message too big")
			continue
		}
		c.received(m.Binary, m.Data)
	}
	<-c.ended
	return nil
}
