package session

import "github.com/troupehq/troupe/transport"

// Frame is one outbound message: transport.Message under the name the
// session and the rooms have always used. Data is never modified after it
// is handed to a session, so one Frame may be queued on many sessions (a
// room broadcast encodes once and shares the bytes).
//
// A session writes to a transport.Conn: the frames it has queued go to
// Conn.Write as one batch, and how a batch goes on the wire (one system
// call, newline-joined text for the "ndjson" subprotocol) is the
// connection's business.
type Frame = transport.Message
