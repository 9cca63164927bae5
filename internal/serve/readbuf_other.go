//go:build !unix

package serve

import "bufio"

// newFrameReader returns the reader coder/websocket reads frames through,
// holding the bytes that net/http had read past the handshake.
func newFrameReader(br *bufio.Reader, cc *corkedConn) *bufio.Reader { return smallReader(br, cc) }
