package serve

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/troupehq/troupe/internal/gopool"
)

// poller holds idle connections without a goroutine each: their sockets
// are in an epoll set of its own (one-shot), and one goroutine waits on it.
// When a client sends, its connection is handed to a pooled goroutine that
// reads on (conn.resume) and parks it again once it is idle. An idle
// connection then costs no stack and no goroutine at all (see idle.go).
//
// Go's own poller keeps the sockets too; a socket may be in several epoll
// sets, and this one only tells which connection to resume.
type poller struct {
	readers gopool.Pool // the goroutines connections are resumed on

	mu      sync.Mutex
	conns   map[uint64]*conn // parked, by token
	epfd    int              // -1 until started
	file    *os.File         // epfd, waited on through Go's own poller
	stopped bool
	done    chan struct{} // closed when the loop has returned
}

// tokens names connections in epoll sets, unique in the process: a stale
// registration can never be taken for another connection, in any set.
var tokens atomic.Uint64

func newPoller() *poller {
	return &poller{conns: make(map[uint64]*conn), epfd: -1}
}

// startLocked creates the epoll set and its goroutine, on the first park.
// The goroutine waits for the set to have events through Go's own poller
// (an epoll set is itself pollable), not in epoll_wait: a goroutine blocked
// in a system call would hold its processor, and with GOMAXPROCS=1 stall
// every other goroutine until the runtime took it back.
func (p *poller) startLocked() bool {
	if p.epfd >= 0 {
		return true
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return false
	}
	f := os.NewFile(uintptr(epfd), "troupe-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return false
	}
	p.epfd, p.file = epfd, f
	p.done = make(chan struct{})
	go p.loop(rc, p.done)
	return true
}

// park puts c in the epoll set and reports whether it did; the caller's
// goroutine must then leave c alone, as another may be reading it already.
func (p *poller) park(c *conn) bool {
	if c.ws.cc == nil || c.ws.cc.rc == nil {
		return false
	}
	p.mu.Lock()
	if p.stopped || !p.startLocked() {
		p.mu.Unlock()
		return false
	}
	if c.token == 0 {
		c.token = tokens.Add(1)
	}
	op := syscall.EPOLL_CTL_MOD
	if !c.registered {
		op = syscall.EPOLL_CTL_ADD
	}
	c.registered = true // before anyone else can have c
	c.parkedAt = time.Now()
	p.conns[c.token] = c
	epfd, tok := p.epfd, c.token
	p.mu.Unlock()

	var errno error
	err := c.ws.cc.rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{
			Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
			Fd:     int32(uint32(tok)),
			Pad:    int32(uint32(tok >> 32)),
		}
		errno = syscall.EpollCtl(epfd, op, int(fd), &ev)
		if errno == syscall.ENOENT || errno == syscall.EEXIST {
			other := syscall.EPOLL_CTL_ADD
			if errno == syscall.EEXIST {
				other = syscall.EPOLL_CTL_MOD
			}
			errno = syscall.EpollCtl(epfd, other, int(fd), &ev)
		}
	})
	if err == nil && errno == nil {
		return true
	}
	// Not in the set. If Close took c out meanwhile, it has resumed c:
	// c is parked as far as the caller goes.
	p.mu.Lock()
	_, still := p.conns[tok]
	delete(p.conns, tok)
	p.mu.Unlock()
	return !still
}

// unpark resumes c if it is parked: its connection is closing, and a
// closed socket leaves the epoll set without an event.
func (p *poller) unpark(c *conn) {
	p.mu.Lock()
	_, ok := p.conns[c.token]
	delete(p.conns, c.token)
	p.mu.Unlock()
	if ok {
		p.readers.Go(c.resume)
	}
}

func (p *poller) loop(rc syscall.RawConn, done chan struct{}) {
	defer close(done)
	events := make([]syscall.EpollEvent, 256)
	n := 0
	var failed error
	collect := func(fd uintptr) bool {
		for {
			k, err := syscall.EpollWait(int(fd), events, 0)
			if err == syscall.EINTR {
				continue
			}
			n, failed = max(k, 0), err
			return err != nil || k > 0 // none yet: wait until the set is readable
		}
	}
	for {
		if err := rc.Read(collect); err != nil || failed != nil {
			return // stop closed the set
		}
		for _, ev := range events[:n] {
			tok := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			c := p.conns[tok]
			delete(p.conns, tok)
			p.mu.Unlock()
			if c != nil {
				p.readers.Go(c.resume)
			}
		}
	}
}

// stop ends the loop; connections parked still are resumed when they
// close (unpark), and later parks fail, so their read loops wait on
// goroutines of their own.
func (p *poller) stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	f, done := p.file, p.done
	p.mu.Unlock()
	if f != nil {
		_ = f.Close() // ends the loop's wait
		<-done
	}
	p.readers.Stop()
}
