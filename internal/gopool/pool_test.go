package gopool

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every task runs once, a task that blocks does not hold up the others,
// and after Stop no goroutine is left.
func TestPoolRunsEveryTaskWithoutWaiting(t *testing.T) {
	var p Pool
	block := make(chan struct{})
	blocked := make(chan struct{})
	p.Go(func() { close(blocked); <-block })
	<-blocked

	const n = 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	ran := make(map[int]int)
	for round := range 3 {
		wg.Add(n)
		for i := range n {
			p.Go(func() {
				mu.Lock()
				ran[i]++
				mu.Unlock()
				wg.Done()
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: tasks did not all run while one task blocks", round)
		}
	}
	for i := range n {
		if ran[i] != 3 {
			t.Fatalf("task %d ran %d times in 3 rounds", i, ran[i])
		}
	}
	close(block)
	p.Stop()
}

// Idle goroutines exit on their own after IdleTimeout.
func TestPoolLetsIdleGoroutinesGo(t *testing.T) {
	var p Pool
	var wg sync.WaitGroup
	wg.Add(50)
	for range 50 {
		p.Go(wg.Done)
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		idle := len(p.idle)
		p.mu.Unlock()
		if idle == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still idle", idle)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// No Stop: goleak in TestMain checks that they exited.
}

// Started and Exiting run once on every goroutine of the pool, Started
// before its first task.
func TestPoolStartedAndExiting(t *testing.T) {
	var mu sync.Mutex
	starts, exits := 0, 0
	p := Pool{
		Started: func() { mu.Lock(); starts++; mu.Unlock() },
		Exiting: func() { mu.Lock(); exits++; mu.Unlock() },
	}
	var wg sync.WaitGroup
	wg.Add(20)
	for range 20 {
		p.Go(func() {
			mu.Lock()
			if starts == 0 {
				t.Error("a task ran before any Started")
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			wg.Done()
		})
	}
	wg.Wait()
	p.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		s, e := starts, exits
		mu.Unlock()
		if s > 0 && s == e {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines started, %d exited", s, e)
		}
		time.Sleep(time.Millisecond)
	}
}
