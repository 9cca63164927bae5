package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// The clients of the fault-injection suite (fault_test.go). Unlike the
// other tests' clients they run on goroutines of their own and never call
// t.Fatal: what goes wrong is reported through faultRun.errorf, and a
// connection keeps everything it received for the checks at the end.

// fconn is one WebSocket connection of a fault client. A goroutine reads
// every frame into frames; the goroutine that drives the connection (a
// worker during the run, the test afterwards) decodes them into msgs with
// pull.
type fconn struct {
	client          // its name, ws, and the frames its read loop takes in
	raw    net.Conn // the TCP connection under ws, for half-closes and resets
	ndjson bool

	// Owned by the driving goroutine.
	sid      string          // the server's session ID, from OnOpen
	scanned  int             // frames decoded so far
	msgs     []fmsg          // every message received, in order
	reqs     map[string]freq // the requests sent with an id, by id (raw JSON)
	answers  map[string]int  // id -> index in msgs of its answer
	lastSeq  map[string]uint64
	epoch    map[string]string
	ended    string // how this side ended the connection ("" if it did not)
	atFence  bool   // open and caught up when the run ended
	badFrame string // the first frame that was not JSON, if any
}

// fmsg is one received message.
type fmsg struct {
	env envelope
	seq uint64 // room.message's seq, decoded once
}

// freq is what the test knows about a request it sent with an id.
type freq struct {
	typ   string
	room  string
	since *uint64
	epoch string
	// wantRecovered, for a resume whose history is known to be complete
	// (or known not to apply), is the recovered flag room.joined must
	// carry.
	wantRecovered *bool
	body          string // room.publish's body, as sent
	before        uint64 // room.history's
	limit         int
}

func newFconn(name string, ws *websocket.Conn, raw net.Conn, ndjson bool) *fconn {
	ws.SetReadLimit(64 << 20)
	c := &fconn{
		client: client{name: name, ws: ws, changed: make(chan struct{}), done: make(chan struct{})},
		raw:    raw, ndjson: ndjson,
		reqs: map[string]freq{}, answers: map[string]int{},
		lastSeq: map[string]uint64{}, epoch: map[string]string{},
	}
	c.startReading()
	return c
}

// pull decodes the frames that arrived since the last pull, and returns
// whether the connection has ended (everything it received is then in
// msgs) and a channel closed on the next frame.
func (c *fconn) pull(f *faultRun) (ended bool, changed <-chan struct{}) {
	c.mu.Lock()
	frames := c.frames[c.scanned:]
	c.scanned = len(c.frames)
	ended, changed = c.readErr != nil, c.changed
	c.mu.Unlock()
	for _, fr := range frames {
		lines := [][]byte{fr}
		if c.ndjson {
			lines = bytes.Split(fr, []byte("\n"))
		}
		for _, l := range lines {
			var e envelope
			if err := json.Unmarshal(l, &e); err != nil || e.Type == "" {
				if c.badFrame == "" {
					c.badFrame = fmt.Sprintf("%.200q (%v)", l, err)
					f.errorf("%s: received a message that is not an envelope: %s", c.name, c.badFrame)
				}
				continue
			}
			m := fmsg{env: e}
			switch e.Type {
			case "room.message":
				var p struct {
					Room string `json:"room"`
					Seq  uint64 `json:"seq"`
				}
				_ = json.Unmarshal(e.Payload, &p)
				m.seq = p.Seq
				c.lastSeq[p.Room] = p.Seq
			case "room.joined":
				var p joinedPayload
				_ = json.Unmarshal(e.Payload, &p)
				c.lastSeq[p.Room] = p.Seq
				c.epoch[p.Room] = p.Epoch
			}
			if len(e.ID) > 0 && string(e.ID) != "null" {
				if prev, dup := c.answers[string(e.ID)]; dup {
					f.errorf("%s: a second answer to id %s: %s %.200s (the first was %s)", c.name, e.ID, e.Type, e.Payload, c.msgs[prev].env.Type)
				} else {
					c.answers[string(e.ID)] = len(c.msgs)
				}
			}
			c.msgs = append(c.msgs, m)
		}
	}
	return ended, changed
}

// await waits for the answer to id. It returns false if the connection
// ended first or nothing came within waitTimeout (reported: every request
// with an id gets one answer).
func (c *fconn) await(f *faultRun, id string) (envelope, bool) {
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		ended, changed := c.pull(f)
		if i, ok := c.answers[id]; ok {
			return c.msgs[i].env, true
		}
		if ended {
			return envelope{}, false
		}
		select {
		case <-changed:
		case <-deadline.C:
			f.errorf("%s: no answer to %s (%s) within %v", c.name, id, c.reqs[id].typ, waitTimeout)
			return envelope{}, false
		}
	}
}

// waitEnd waits for the read loop to end, for at most limit.
func (c *fconn) waitEnd(limit time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(limit):
		return false
	}
}

func (c *fconn) isEnded() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// closeStatus is the close code the client saw (-1: none, the TCP
// connection just ended).
func (c *fconn) closeStatus() (int, string) {
	c.mu.Lock()
	err := c.readErr
	c.mu.Unlock()
	code, reason := closeCode(err)
	return int(code), reason
}

// write sends one message of type typ; an error means the connection is
// gone (or stuck), and the caller moves on.
func (c *fconn) write(typ websocket.MessageType, data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return c.ws.Write(ctx, typ, data)
}

// faultEnvelope encodes a client envelope; id is raw JSON or "".
func faultEnvelope(typ, id string, payload any) []byte {
	e := struct {
		Type    string          `json:"type"`
		ID      json.RawMessage `json:"id,omitempty"`
		Payload any             `json:"payload,omitempty"`
	}{Type: typ, Payload: payload}
	if id != "" {
		e.ID = json.RawMessage(id)
	}
	b, err := json.Marshal(e)
	if err != nil {
		panic(err) // the suite's own payloads always encode
	}
	return b
}

// dialFault opens a WebSocket connection named name (in clientHeader),
// keeping hold of its TCP connection. rcvBuf, if not zero, caps the
// client's kernel receive buffer.
func (f *faultRun) dialFault(name string, ndjson bool, rcvBuf int) (*fconn, error) {
	var raw net.Conn
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, addr)
		if tc, ok := nc.(*net.TCPConn); ok && rcvBuf > 0 {
			_ = tc.SetReadBuffer(rcvBuf)
		}
		raw = nc
		return nc, err
	}}
	defer tr.CloseIdleConnections()
	hdr := http.Header{}
	hdr.Set(clientHeader, name)
	opts := &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: hdr}
	if ndjson {
		opts.Subprotocols = []string{"ndjson"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, f.url, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, fmt.Errorf("dial %s: HTTP %d: %w", name, status, err)
	}
	c := newFconn(name, ws, raw, ndjson && ws.Subprotocol() == "ndjson")
	c.sid = f.sessionOf(name, c)
	return c, nil
}

// Raw connections: the opening handshake by hand, then bytes no WebSocket
// library would write.

// rawFaultDial opens a TCP connection and performs the opening handshake.
func (f *faultRun) rawFaultDial(name string, rng *rand.Rand) (net.Conn, *bufio.Reader, error) {
	nc, err := net.DialTimeout("tcp", f.addr, waitTimeout)
	if err != nil {
		return nil, nil, err
	}
	var key [16]byte
	for i := range key {
		key[i] = byte(rng.UintN(256))
	}
	k := base64.StdEncoding.EncodeToString(key[:])
	req, err := http.NewRequest(http.MethodGet, "http://"+f.addr+"/", nil)
	if err != nil {
		_ = nc.Close()
		return nil, nil, err
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", k)
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set(clientHeader, name)
	_ = nc.SetDeadline(time.Now().Add(waitTimeout))
	br := bufio.NewReader(nc)
	if err := req.Write(nc); err != nil {
		_ = nc.Close()
		return nil, nil, err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		_ = nc.Close()
		return nil, nil, err
	}
	_ = resp.Body.Close()
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		_ = nc.Close()
		return nil, nil, fmt.Errorf("handshake answered %s", resp.Status)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, br, nil
}

// rawFrame builds a client frame: b0 is the first byte (FIN, RSV bits,
// opcode); the payload is masked unless unmasked is set. announce, if
// larger than the payload, is the length the header claims.
func rawFrame(b0 byte, payload []byte, unmasked bool, announce int, rng *rand.Rand) []byte {
	n := max(len(payload), announce)
	maskBit := byte(0x80)
	if unmasked {
		maskBit = 0
	}
	out := []byte{b0}
	switch {
	case n < 126:
		out = append(out, maskBit|byte(n))
	case n < 1<<16:
		out = append(out, maskBit|126, 0, 0)
		binary.BigEndian.PutUint16(out[len(out)-2:], uint16(n))
	default:
		out = append(out, maskBit|127, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint64(out[len(out)-8:], uint64(n))
	}
	if unmasked {
		return append(out, payload...)
	}
	var mask [4]byte
	for i := range mask {
		mask[i] = byte(rng.UintN(256))
	}
	out = append(out, mask[:]...)
	for i, b := range payload {
		out = append(out, b^mask[i%4])
	}
	return out
}

// rawReadFrame reads one server frame (unmasked): its opcode and payload.
func rawReadFrame(br *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > 64<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// rawAwait reads server frames until a text frame containing want, for at
// most limit.
func rawAwait(nc net.Conn, br *bufio.Reader, limit time.Duration, want string) bool {
	_ = nc.SetReadDeadline(time.Now().Add(limit))
	defer nc.SetReadDeadline(time.Time{})
	for {
		op, p, err := rawReadFrame(br)
		if err != nil {
			return false
		}
		if op == 0x1 && bytes.Contains(p, []byte(want)) {
			return true
		}
	}
}

// rawReadUntilEnd reads server frames until the connection ends or limit
// passes, answering a close frame as a client must (else the server waits
// for the answer before it lets go of the connection). It returns the code
// of the close frame the server sent (-1 if none) and whether the
// connection ended in time.
func rawReadUntilEnd(nc net.Conn, br *bufio.Reader, limit time.Duration, rng *rand.Rand) (code int, ended bool) {
	code = -1
	_ = nc.SetReadDeadline(time.Now().Add(limit))
	for {
		op, p, err := rawReadFrame(br)
		if err != nil {
			return code, !isTimeout(err)
		}
		if op == 0x8 && code == -1 {
			code = 1005
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			_ = nc.SetWriteDeadline(time.Now().Add(limit))
			_, _ = nc.Write(rawFrame(0x88, p[:min(len(p), 2)], false, 0, rng))
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
