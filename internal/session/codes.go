package session

// Close codes Troupe uses (RFC 6455, section 7.4.1). They are plain ints so
// that packages above actors need not import a WebSocket library.
const (
	// CloseNormal: Close was called, or the peer closed normally.
	CloseNormal = 1000
	// CloseGoingAway: the server is shutting down (graceful Shutdown).
	CloseGoingAway = 1001
	// CloseProtocolError: the peer broke the WebSocket protocol.
	CloseProtocolError = 1002
	// CloseUnsupportedData: a frame of a kind the server does not accept.
	CloseUnsupportedData = 1003
	// CloseInvalidData: a text message that is not valid UTF-8.
	CloseInvalidData = 1007
	// CloseNoStatus: the peer closed without a status code.
	CloseNoStatus = 1005
	// CloseAbnormal: the connection dropped without a close frame
	// (network failure, pong timeout, ShutdownNow). Never sent on the wire.
	CloseAbnormal = 1006
	// ClosePolicyViolation: idle timeout, or a client that broke a policy.
	ClosePolicyViolation = 1008
	// CloseMessageTooBig: a message over the configured maximum size.
	CloseMessageTooBig = 1009
	// CloseInternalError: the server hit an unexpected condition.
	CloseInternalError = 1011
	// CloseTryAgainLater: the session's outbound queue overflowed (slow
	// consumer); the client missed messages and should reconnect.
	CloseTryAgainLater = 1013
)
