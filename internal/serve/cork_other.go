//go:build !unix

package serve

import "net"

// rawWriter writes without waiting where the platform allows; here it
// never does, and every batch arms its deadline.
type rawWriter struct{}

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) try([]byte) int { return 0 }
