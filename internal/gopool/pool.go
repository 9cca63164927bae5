// Package gopool runs short tasks on goroutines that are kept between
// tasks.
//
// Why not `go fn()`: a new goroutine starts with the runtime's starting
// stack, which it sizes from the average stack in use. When most goroutines
// are idle connections waiting on small stacks, that is 2 KiB, and a task
// that needs 4 KiB (a session's mailbox run, a write through
// coder/websocket) grows and copies its stack every time it starts. A kept
// goroutine grows its stack once. Idle goroutines are let go after
// IdleTimeout, so an idle server keeps none.
package gopool

import (
	"sync"
	"time"
)

// IdleTimeout is how long a goroutine waits for a task before it exits.
const IdleTimeout = 100 * time.Millisecond

// maxIdle bounds the goroutines kept idle; more exit at once.
const maxIdle = 1024

// Pool runs tasks on kept goroutines. The zero Pool is ready to use; set
// Started and Exiting, if at all, before the first Go.
type Pool struct {
	// Started, if set, runs on each new goroutine before its first task,
	// and Exiting on it after its last: for state kept per goroutine.
	Started, Exiting func()

	mu      sync.Mutex
	idle    []*idler // a stack: the most recently idle is taken first
	reaper  *time.Timer
	reaping bool
	stopped bool
}

type idler struct {
	next  chan func() // buffered; nil task: exit
	since time.Time
}

// Go runs fn on an idle goroutine of the pool, or on a new one. It never
// waits for a goroutine to become free.
func (p *Pool) Go(fn func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.next <- fn // an idle goroutine's channel is empty
		return
	}
	p.mu.Unlock()
	go p.run(fn)
}

func (p *Pool) run(fn func()) {
	if p.Started != nil {
		p.Started()
	}
	if p.Exiting != nil {
		defer p.Exiting()
	}
	w := &idler{next: make(chan func(), 1)}
	for fn != nil {
		fn()
		fn = p.park(w)
	}
}

// park puts w on the idle stack and waits for its next task.
func (p *Pool) park(w *idler) func() {
	p.mu.Lock()
	if p.stopped || len(p.idle) >= maxIdle {
		p.mu.Unlock()
		return nil
	}
	w.since = time.Now()
	p.idle = append(p.idle, w)
	if p.reaper == nil {
		p.reaper = time.AfterFunc(IdleTimeout, p.reap)
	} else if !p.reaping {
		p.reaper.Reset(IdleTimeout)
	}
	p.reaping = true
	p.mu.Unlock()
	return <-w.next
}

// reap lets the goroutines idle for IdleTimeout go. One timer serves them
// all, armed only while some are idle.
func (p *Pool) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	cut := time.Now().Add(-IdleTimeout)
	n := 0
	for n < len(p.idle) && !p.idle[n].since.After(cut) {
		p.idle[n].next <- nil
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	if len(p.idle) == 0 {
		p.reaping = false
		return
	}
	p.reaper.Reset(time.Until(p.idle[0].since.Add(IdleTimeout)) + time.Millisecond)
}

// Stop lets the idle goroutines go; busy ones exit when their task
// returns. Go still works after Stop, on a goroutine that exits after its
// task.
func (p *Pool) Stop() {
	p.mu.Lock()
	p.stopped = true
	idle := p.idle
	p.idle = nil
	if p.reaper != nil {
		p.reaper.Stop()
		p.reaping = false
	}
	p.mu.Unlock()
	for _, w := range idle {
		w.next <- nil
	}
}
