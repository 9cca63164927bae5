package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// The outbox: a room.publish carries a message id (mid), and until the
// server acknowledges it (room.published) the client keeps it. A publish
// whose connection ended before the answer came is sent again, with the
// same mid, on the next connection (to whichever node), after the room's
// rejoin; the server publishes a mid once and answers a repeat with the
// first message's seq. So each Publish returns once, with the seq every
// member sees, and the message is in the room once, whatever the
// disconnects in between (within the server's DedupeWindow).

// Publish publishes body (any JSON value) to the room and returns its
// sequence number (from room.published). The message reaches OnMessage
// too, as every member's does. Not joined: an *Error "not_member".
//
// A publish cut off by a disconnect is sent again after the reconnect,
// with the same message id, so that it is published once (see
// Options.MaxOutbox); it returns when the server has acknowledged it, or
// with the server's refusal, or when ctx ends (the message may then have
// been published or not).
func (r *Room) Publish(ctx context.Context, body any) (uint64, error) {
	return r.PublishMid(ctx, "", body)
}

// PublishMid is Publish with the application's own message id (at most 64
// bytes, unique among this user's messages to the room and unguessable
// when the server does not know who the user is, for example a UUID), for
// an application that keeps its unsent messages across restarts of the
// client itself. Publish makes a random one.
func (r *Room) PublishMid(ctx context.Context, mid string, body any) (uint64, error) {
	c := r.c
	raw, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	if c.opts.MaxOutbox < 0 {
		return r.publishOnce(ctx, mid, raw)
	}
	if mid == "" {
		mid = newMid()
	}
	c.mu.Lock()
	if c.outbox >= c.opts.MaxOutbox {
		c.mu.Unlock()
		return 0, ErrOutboxFull
	}
	c.outbox++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.outbox--
		c.mu.Unlock()
	}()
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		seq, err := r.publishOnce(actx, mid, raw)
		cancel()
		var e *Error
		switch {
		case err == nil:
			return seq, nil
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			// No answer in time (a refusal without the request's id, such
			// as rate_limited, settles nothing): again, with the same mid.
		case errors.Is(err, ErrDisconnected):
			// Sent, answer lost: again, on the next connection.
		case errors.Is(err, ErrQueueFull):
			if err := c.waitConnected(ctx); err != nil {
				return 0, err
			}
		case errors.As(err, &e) && e.Code == "unavailable":
			// Not taken now (the cluster is electing a leader, the room
			// is catching up with its log): again after a while.
			t := time.NewTimer(backoff(attempt, c.opts.MinDelay, c.opts.MaxDelay, c.opts.random))
			select {
			case <-ctx.Done():
				t.Stop()
				return 0, ctx.Err()
			case <-c.ctx.Done():
				t.Stop()
				return 0, ErrClosed
			case <-t.C:
			}
		default:
			return 0, err
		}
	}
}

// publishOnce sends one room.publish and waits for its answer.
func (r *Room) publishOnce(ctx context.Context, mid string, body json.RawMessage) (uint64, error) {
	p, err := Request[struct {
		Seq uint64 `json:"seq"`
	}](ctx, r.c, "room.publish", struct {
		Room string          `json:"room"`
		Body json.RawMessage `json:"body"`
		Mid  string          `json:"mid,omitempty"`
	}{r.name, body, mid})
	return p.Seq, err
}

// waitConnected waits until a connection is open.
func (c *Client) waitConnected(ctx context.Context) error {
	c.mu.Lock()
	up, closed := c.up, c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// newMid returns a random UUID (version 4).
func newMid() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
