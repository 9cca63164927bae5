package transport

import (
	"sync"
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
	next    uint64           // the last token given
	epfd    int              // -1 until started
	wakefd  int              // eventfd that stops the loop
	stopped bool
	done    chan struct{} // closed when the loop has returned
}

// wakeToken marks the eventfd in the epoll set; connections' tokens start
// at 1.
const wakeToken = 0

func newPoller() *poller {
	return &poller{conns: make(map[uint64]*conn), epfd: -1, wakefd: -1}
}

// start creates the epoll set and its goroutine, on the first park.
func (p *poller) startLocked() bool {
	if p.epfd >= 0 {
		return true
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	r, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return false
	}
	wakefd := int(r)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(wakefd)
		return false
	}
	p.epfd, p.wakefd = epfd, wakefd
	p.done = make(chan struct{})
	go p.loop(epfd, wakefd, p.done)
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
		p.next++
		c.token = p.next
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

func (p *poller) loop(epfd, wakefd int, done chan struct{}) {
	defer close(done)
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			tok := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if tok == wakeToken {
				return
			}
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
	epfd, wakefd, done := p.epfd, p.wakefd, p.done
	p.mu.Unlock()
	if epfd < 0 {
		p.readers.Stop()
		return
	}
	one := [8]byte{1}
	_, _ = syscall.Write(wakefd, one[:])
	<-done
	syscall.Close(epfd)
	syscall.Close(wakefd)
	p.readers.Stop()
}
