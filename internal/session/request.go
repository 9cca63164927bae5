package session

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
)

// ReplyError is what Request returns when the client answered with an error
// envelope.
type ReplyError struct {
	Code    string
	Message string
}

// Error returns "code: message".
func (e *ReplyError) Error() string { return e.Code + ": " + e.Message }

// requests are the server's own questions to the client, waiting for an
// answer with their id. The map exists only while one is pending.
type requests struct {
	mu      sync.Mutex
	next    uint64
	pending map[string]chan reply
}

type reply struct {
	payload json.RawMessage
	err     error
}

// RequestIDPrefix starts the ids of the server's requests, so that they never
// collide with ids a client chooses for its own.
const RequestIDPrefix = "srv-"

// Request sends {"type": typ, "id": <a new id>, "payload": payload} and waits
// for the client to answer with that id, until ctx ends or the session
// closes. The answer's payload is returned; an error envelope becomes a
// *ReplyError.
//
// The answer is handled in order with the session's other messages, after
// the handler that is running: call Request from another goroutine
// (go func() {...}()), not from a handler or callback of the same session,
// or it can only time out.
func (s *Session) Request(ctx context.Context, typ string, payload any) (json.RawMessage, error) {
	if s.opts.EncodeRequest == nil {
		return nil, ErrNoEncoder
	}
	r := &s.requests
	r.mu.Lock()
	r.next++
	id := RequestIDPrefix + strconv.FormatUint(r.next, 10)
	ch := make(chan reply, 1)
	if r.pending == nil {
		r.pending = make(map[string]chan reply)
	}
	r.pending[id] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, id)
		if len(r.pending) == 0 {
			r.pending = nil
		}
		r.mu.Unlock()
	}()

	b, err := s.opts.EncodeRequest(typ, payload, id)
	if err != nil {
		return nil, err
	}
	if err := s.SendText(b); err != nil {
		return nil, err
	}
	select {
	case rep := <-ch:
		return rep.payload, rep.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, ErrClosed
	}
}

// Resolve hands a client's answer to the Request waiting for id. It reports
// whether one was waiting; the dispatcher calls it for "reply" and "error"
// envelopes whose id has RequestIDPrefix.
func Resolve(s *Session, id string, payload json.RawMessage, err error) bool {
	r := &s.requests
	r.mu.Lock()
	ch, ok := r.pending[id]
	r.mu.Unlock()
	if ok {
		select {
		case ch <- reply{payload: payload, err: err}:
		default: // answered twice: the first answer counts
		}
	}
	return ok
}
