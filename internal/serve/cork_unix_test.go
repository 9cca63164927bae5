//go:build unix

package serve

import (
	"net"
	"testing"
)

// tappedConn is a listener's wrapper as users write them: it embeds
// *net.TCPConn, so SyscallConn is promoted, and counts what goes through
// its own Write.
type tappedConn struct {
	*net.TCPConn
	seen int
}

func (c *tappedConn) Write(p []byte) (int, error) { c.seen += len(p); return c.TCPConn.Write(p) }

// The raw paths (rawWriter, the lending reader and the poller) work on the
// socket under the standard library's own connections only: a wrapper's
// Write and Read are what it is for, and are not gone around.
func TestRawPathsOnlyUnderTheStandardConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if c := <-accepted; c != nil {
		defer c.Close()
	}
	if newRawWriter(d) == nil || socketOf(d) == nil {
		t.Fatal("no raw path under a *net.TCPConn")
	}
	tc := &tappedConn{TCPConn: d.(*net.TCPConn)}
	if r := newRawWriter(tc); r != nil {
		n := r.try([]byte("hello"))
		t.Fatalf("a raw writer under a wrapper: it wrote %d bytes around its Write (which saw %d)", n, tc.seen)
	}
	if socketOf(tc) != nil {
		t.Fatal("the lending reader and the poller would read around a wrapper's Read")
	}
}
