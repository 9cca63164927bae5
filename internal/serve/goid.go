package serve

import (
	"bytes"
	"runtime"
	"strconv"
)

// goroutineID returns the current goroutine's ID. It costs microseconds, so
// it is called once per worker started and once per Shutdown or Close,
// never per message: its only use is to let Shutdown, called from a
// callback on a worker, skip waiting for that callback's connection.
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
