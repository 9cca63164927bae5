// Package router maps envelope types to typed handlers for the root
// package: decoding, unknown types, handler errors and panics become the
// *typed.Error a client is told.
package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/troupehq/troupe/internal/wire"
	"github.com/troupehq/troupe/typed"
)

// Router maps envelope types to handlers. C is the per-message context the
// application's handlers receive (Troupe's root package uses *troupe.Context).
// Registration is safe at any time; dispatch takes a read lock.
type Router[C any] struct {
	mu       sync.RWMutex
	handlers map[string]func(c C, env *typed.Envelope) error
}

// NewRouter returns an empty router.
func NewRouter[C any]() *Router[C] {
	return &Router[C]{handlers: make(map[string]func(C, *typed.Envelope) error)}
}

// Handle registers fn for envelopes of type typ. The payload is decoded into
// a fresh T with encoding/json (a missing payload leaves T at its zero
// value); if it does not decode, the client gets an invalid_payload error
// and fn is not called. Registering a type twice replaces the handler.
func Handle[C, T any](r *Router[C], typ string, fn func(c C, msg T) error) {
	r.HandleEnvelope(typ, func(c C, env *typed.Envelope) error {
		var msg T
		if raw, ok := any(&msg).(*json.RawMessage); ok {
			// typed.Decode has validated the payload already: encoding/json
			// would only validate it again and copy it.
			if len(env.Payload) > 0 && string(env.Payload) != "null" {
				*raw = env.Payload
			}
		} else if len(env.Payload) > 0 && string(env.Payload) != "null" {
			if err := json.Unmarshal(env.Payload, &msg); err != nil {
				return typed.NewError(typed.CodeInvalidPayload, fmt.Sprintf("payload of %q: %v", typ, err))
			}
		}
		return fn(c, msg)
	})
}

// HandleEnvelope registers fn with the undecoded envelope.
func (r *Router[C]) HandleEnvelope(typ string, fn func(c C, env *typed.Envelope) error) {
	r.mu.Lock()
	r.handlers[typ] = fn
	r.mu.Unlock()
}

// Has reports whether a handler is registered for typ.
func (r *Router[C]) Has(typ string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.handlers[typ]
	return ok
}

// Dispatch runs the handler for env.Type. It returns an *typed.Error with
// CodeUnknownType when there is none, the handler's error, or a *PanicError
// if the handler panicked (the panic does not propagate).
func (r *Router[C]) Dispatch(c C, env *typed.Envelope) (err error) {
	r.mu.RLock()
	fn, ok := r.handlers[env.Type]
	r.mu.RUnlock()
	if !ok {
		return typed.NewError(typed.CodeUnknownType, fmt.Sprintf("no handler for type %q", env.Type))
	}
	defer func() {
		if v := recover(); v != nil {
			err = &typed.PanicError{Type: env.Type, Value: v}
		}
	}()
	return fn(c, env)
}

// ClientError is the *Error to answer for err as Dispatch returned it: a
// panic becomes CodeInternal without leaking its value.
func ClientError(err error) *typed.Error {
	if pe, ok := err.(*typed.PanicError); ok {
		return typed.NewError(typed.CodeInternal, fmt.Sprintf("internal error handling %q", pe.Type))
	}
	return AsError(err)
}

// AsError turns any error into the *typed.Error a client is told: the one
// inside err if there is one, else CodeHandlerError with err's text.
func AsError(err error) *typed.Error {
	var e *typed.Error
	if errors.As(err, &e) {
		return e
	}
	return &typed.Error{Code: typed.CodeHandlerError, Message: err.Error()}
}

// ErrorEnvelope encodes {"type":"error","payload":{"code","message"},"id"}.
func ErrorEnvelope(e *typed.Error, id json.RawMessage) []byte {
	return wire.Error(id, e.Code, e.Message)
}
