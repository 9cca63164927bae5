package serve

// The handler's workers run the connections' callbacks. A connection with
// messages waiting is handed to an idle worker, or to a new one if none is
// idle (Handler.pool, an internal/gopool Pool), so a handler that blocks
// holds up only its own connection, as it would on a goroutine of its own.
// Workers are kept between bursts, so the cost of starting one (a
// goroutine, the stack its handlers grow) is paid once per burst of
// concurrency, not once per message; a worker idle for 100 ms exits, so an
// idle server keeps none.

// dispatch hands c, which has items queued and no worker, to a worker,
// which runs them and then is free for another connection.
func (h *Handler) dispatch(c *conn) { h.pool.Go(c.run) }

// stopWorkers lets the idle workers go and has busy ones exit when done,
// and stops the poller.
func (h *Handler) stopWorkers() {
	h.poll.stop()
	h.pool.Stop()
}
