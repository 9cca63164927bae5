package typed

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/troupehq/troupe/internal/wire"
)

// Error codes of the error envelope. Handlers may use their own codes too.
const (
	CodeBadRequest     = "bad_request"     // not JSON, or not an envelope
	CodeUnknownType    = "unknown_type"    // no handler for the type
	CodeInvalidPayload = "invalid_payload" // payload does not decode into the handler's type
	CodeHandlerError   = "handler_error"   // the handler returned a plain error
	CodeInternal       = "internal"        // the handler panicked
)

// Error is an error with a code for the client. A handler that returns one
// (or an error wrapping one) chooses the code and message the client sees.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Err is the Go error behind this one, for errors.Is and errors.As on
	// the server; it is not sent to the client.
	Err error `json:"-"`
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// NewError returns an *Error with the given code and message.
func NewError(code, message string) *Error { return &Error{Code: code, Message: message} }

// Errorf is NewError with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Error returns "code: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// AsError turns any error into the *Error a client is told: the *Error
// inside err if there is one, else CodeHandlerError with err's text.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeHandlerError, Message: err.Error()}
}

// ErrorEnvelope encodes {"type":"error","payload":{"code","message"},"id"}.
func ErrorEnvelope(e *Error, id json.RawMessage) []byte { return wire.Error(id, e.Code, e.Message) }

// PanicError is what Dispatch returns when a handler panicked.
type PanicError struct {
	Type  string // the envelope type whose handler panicked
	Value any    // the value passed to panic
}

// Error says which handler panicked with what.
func (e *PanicError) Error() string {
	return fmt.Sprintf("typed: handler for %q panicked: %v", e.Type, e.Value)
}
