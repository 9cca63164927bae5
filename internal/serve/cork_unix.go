//go:build unix

package serve

import (
	"net"
	"syscall"
)

// rawWriter is how a batch writes without a deadline (corkWriter.send): one
// non-blocking write(2) on the socket, where the connection is one.
type rawWriter struct {
	rc syscall.RawConn
	fn func(fd uintptr) bool // write, made once: a write allocates nothing
	b  []byte
	n  int
}

func newRawWriter(c net.Conn) *rawWriter {
	rc := socketOf(c)
	if rc == nil {
		return nil
	}
	r := &rawWriter{rc: rc}
	r.fn = r.write
	return r
}

// socketOf returns the socket under c when c is the standard library's
// own TCP or Unix connection, nil otherwise. A type of another package
// that merely offers SyscallConn (one that embeds *net.TCPConn to count,
// limit or copy what goes through its Read and Write, say) is not read or
// written around: its methods are what it is for.
func socketOf(c net.Conn) syscall.RawConn {
	var rc syscall.RawConn
	var err error
	switch c := c.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
	case *net.UnixConn:
		rc, err = c.SyscallConn()
	default:
		return nil
	}
	if err != nil {
		return nil
	}
	return rc
}

// try writes what of b the socket takes at once, and reports how much.
func (r *rawWriter) try(b []byte) int {
	r.b, r.n = b, 0
	_ = r.rc.Write(r.fn) // closed: nothing written, the blocking write reports it
	r.b = nil
	return r.n
}

// write is RawConn.Write's callback: one attempt, never a wait.
func (r *rawWriter) write(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), r.b)
		if err == syscall.EINTR {
			continue
		}
		if n > 0 {
			r.n = n
		}
		return true
	}
}
