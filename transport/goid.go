package transport

import (
	"bytes"
	"runtime"
	"strconv"
)

// goroutineID returns the current goroutine's ID. It is called once per
// connection and once per Shutdown, never per message: its only use is to
// let Shutdown, called from a handler on a read loop, skip waiting for that
// read loop.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
