package typed

import (
	"fmt"
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

// Error returns "code: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// PanicError is what the server's OnError receives when application code
// panicked: a message handler (Type is the envelope type) or room logic
// (Room is the room, restarted since). The session or room lives on.
type PanicError struct {
	Type  string // the envelope type whose handler panicked, if any
	Room  string // the room whose logic panicked, if any
	Value any    // the value passed to panic
}

// Error says what panicked with what.
func (e *PanicError) Error() string {
	if e.Room != "" {
		return fmt.Sprintf("typed: room %q logic panicked: %v (room restarted)", e.Room, e.Value)
	}
	return fmt.Sprintf("typed: handler for %q panicked: %v", e.Type, e.Value)
}
