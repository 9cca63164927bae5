package client

import (
	"context"
	"errors"
	"net/http"

	"github.com/coder/websocket"
)

// SubprotocolNDJSON is the WebSocket subprotocol under which the server may
// pack several envelopes, one per line, into one frame.
const SubprotocolNDJSON = "ndjson"

// defaultReadLimit bounds one frame read from the server: a room.joined of a
// large room, or a batch of queued messages, passes coder/websocket's own
// default of 32 KiB.
const defaultReadLimit = 16 << 20

// Transport opens connections to a Troupe node. WebSocket is the one the
// client uses unless Options.Transport names another: this is the seam for
// a transport that is not a WebSocket (an HTTP fallback, an in-memory pipe
// in tests). The client needs nothing of a transport but whole text
// messages in both directions and a way to end them.
type Transport interface {
	// Dial connects to url; ctx bounds the handshake only.
	Dial(ctx context.Context, url string) (Conn, error)
}

// Conn is one connection opened by a Transport. Read is called from one
// goroutine, Write from another (never two Writes at once), and Close or
// Abort from a third; both must unblock a Read or Write in progress.
type Conn interface {
	// Read returns the next text message from the server.
	Read(ctx context.Context) ([]byte, error)
	// Write sends one text message (one envelope).
	Write(ctx context.Context, msg []byte) error
	// Batched reports whether a message read may hold several envelopes
	// separated by newlines (the ndjson subprotocol).
	Batched() bool
	// Close ends the connection normally (a WebSocket close handshake with
	// 1000), waiting a bounded time for the peer.
	Close() error
	// Abort drops the connection at once: the path is dead or the client
	// has given up on it.
	Abort() error
}

// WebSocket is the default Transport: a WebSocket per connection
// (github.com/coder/websocket), offering the ndjson subprotocol.
type WebSocket struct {
	// HTTPClient makes the upgrade request. Nil: a client of its own per
	// dial that keeps no idle connection.
	HTTPClient *http.Client
	// Header is sent with the upgrade request (a cookie, a token).
	Header http.Header
	// NoNDJSON leaves the ndjson subprotocol out: one envelope per frame.
	NoNDJSON bool
	// ReadLimit is the largest frame accepted from the server in bytes.
	// Zero means 16 MiB; negative means no limit.
	ReadLimit int64
}

// Dial opens a WebSocket to url (ws:// or wss://).
func (w *WebSocket) Dial(ctx context.Context, url string) (Conn, error) {
	hc := w.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true}}
	}
	opts := &websocket.DialOptions{HTTPClient: hc, HTTPHeader: w.Header}
	if !w.NoNDJSON {
		opts.Subprotocols = []string{SubprotocolNDJSON}
	}
	ws, resp, err := websocket.Dial(ctx, url, opts)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	switch {
	case w.ReadLimit == 0:
		ws.SetReadLimit(defaultReadLimit)
	case w.ReadLimit < 0:
		ws.SetReadLimit(-1)
	default:
		ws.SetReadLimit(w.ReadLimit)
	}
	return &wsConn{ws: ws, batched: ws.Subprotocol() == SubprotocolNDJSON}, nil
}

type wsConn struct {
	ws      *websocket.Conn
	batched bool
}

func (c *wsConn) Read(ctx context.Context) ([]byte, error) {
	for {
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			return nil, err
		}
		if typ == websocket.MessageText {
			return data, nil
		}
		// Binary messages are not envelopes.
	}
}

func (c *wsConn) Write(ctx context.Context, msg []byte) error {
	return c.ws.Write(ctx, websocket.MessageText, msg)
}

func (c *wsConn) Batched() bool { return c.batched }

func (c *wsConn) Close() error {
	err := c.ws.Close(websocket.StatusNormalClosure, "")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (c *wsConn) Abort() error { return c.ws.CloseNow() }
