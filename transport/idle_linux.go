package transport

import (
	"syscall"
	"unsafe"
)

// peekSize is how much waitIdle looks at: a few control frames.
const peekSize = 256

// peekRaw is what RawConn.Read retries each time the socket becomes
// readable, for waitIdle: it reads nothing, it looks (MSG_PEEK). recvfrom
// is called directly because syscall.Recvfrom allocates a socket address.
func (l *lendingReader) peekRaw(fd uintptr) bool {
	var b [peekSize]byte
	for {
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), peekSize,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable, then again
		case 0:
			l.plan(controlPrefix(b[:n]))
		}
		return true // readable, at end of stream, or failed: Read will tell
	}
}

// canPeek: waitIdle waits here.
const canPeek = true
