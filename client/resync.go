package client

import (
	"encoding/json"
	"errors"
	"time"
)

// Resync: a server whose queue for this client overflowed with a room's
// traffic drops it and sends {"type":"room.resync","payload":{"room",
// "seq":N}}, N being the last message it wrote before the gap. The room
// then catches up from the room's history, one page at a time, while new
// messages keep arriving: those that cannot be delivered yet are held (at
// most maxHeld; beyond that they are dropped and read from the history
// too), so that OnMessage still sees every message once, in sequence
// order, and the connection stays up. Once caught up, OnRecover is told
// whether everything was recovered (false: part of the gap had already
// left the history; the messages after it follow), and the member list is
// fetched again with a join, since presence.diffs may have been dropped
// too.

// Bounds of a catch-up.
const (
	// maxHeld bounds the live messages held while a catch-up reads the
	// history.
	maxHeld = 1000
	// pageSize is how many messages one room.history page asks for:
	// small enough that a slow link takes a page well within the server's
	// write timeout.
	pageSize = 200
	// pageRetry is the wait before asking again for a page that was
	// refused (rate_limited, unavailable).
	pageRetry = 250 * time.Millisecond
)

// catchUp is a resync in progress.
type catchUp struct {
	since    uint64    // lastSeq when it began
	held     []Message // live messages beyond lastSeq+1, ascending
	high     uint64    // the newest seq seen live
	again    bool      // a room.resync came while a page was asked for
	fetching bool      // a page is asked for
	lost     bool      // part of the gap was no longer in the history
	// confirming: the history had nothing more, and a refresh asks the
	// room where it is.
	confirming bool
	timer      *time.Timer
	refreshing *time.Timer // bounds the refresh's wait for its answer
}

// onResyncLocked starts (or extends) a catch-up.
func (r *Room) onResyncLocked(payload json.RawMessage) {
	var p struct {
		Seq uint64 `json:"seq"`
	}
	if !r.joined || !r.hasSeq || json.Unmarshal(payload, &p) != nil {
		return
	}
	cu := r.catch
	if cu == nil {
		cu = &catchUp{since: r.lastSeq}
		r.catch = cu
	}
	if cu.fetching {
		cu.again = true
		return
	}
	r.fetchLocked()
}

// holdLocked keeps a live message that cannot be delivered yet.
func (cu *catchUp) hold(m Message) {
	cu.high = max(cu.high, m.Seq)
	if n := len(cu.held); n >= maxHeld || n > 0 && m.Seq <= cu.held[n-1].Seq {
		return // read from the history instead
	}
	cu.held = append(cu.held, m)
}

// drainLocked delivers the held messages that are next in order.
func (r *Room) drainLocked() {
	cu := r.catch
	i := 0
	for ; i < len(cu.held); i++ {
		m := cu.held[i]
		if m.Seq <= r.lastSeq {
			continue
		}
		if m.Seq != r.lastSeq+1 {
			break
		}
		r.deliverLocked(m)
	}
	cu.held = append(cu.held[:0], cu.held[i:]...)
}

// fetchLocked asks for the next page of the gap: the messages after
// lastSeq, up to the first one held.
func (r *Room) fetchLocked() {
	c, cu := r.c, r.catch
	from := r.lastSeq + 1
	before := from + pageSize
	if len(cu.held) > 0 {
		before = min(before, cu.held[0].Seq)
	}
	cu.fetching, cu.again = true, false
	id := c.nextID.Add(1)
	data, _ := encode("room.history", map[string]any{"room": r.name, "before": before, "limit": before - from}, id)
	c.pending[id] = &pending{done: make(chan answer, 1), onAnswer: func(env *envelope, err error) {
		r.onPageLocked(cu, from, before, env, err)
	}}
	c.out = append(c.out, outFrame{data: data, id: id})
	c.wakeWriterLocked()
	cu.timer = c.timeoutLocked(id, cu, r, errPageTimeout)
}

var (
	errPageTimeout    = errors.New("troupe client: no room.history page in time")
	errRefreshTimeout = errors.New("troupe client: no answer to the catch-up's room.join in time")
)

// timeoutLocked fails request id with err after RequestTimeout, if it is
// still waiting and cu still the room's catch-up: an answer can be lost
// to the server's rate limit, which answers without the request's id.
func (c *Client) timeoutLocked(id int64, cu *catchUp, r *Room, err error) *time.Timer {
	return time.AfterFunc(c.opts.RequestTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if p := c.pending[id]; p != nil && r.catch == cu {
			c.settleLocked(id, p, nil, err)
		}
	})
}

// onPageLocked takes in a page of the gap (from, before).
func (r *Room) onPageLocked(cu *catchUp, from, before uint64, env *envelope, err error) {
	if r.catch != cu {
		return
	}
	cu.timer.Stop()
	cu.fetching = false
	if err != nil {
		var e *Error
		switch {
		case errors.Is(err, ErrDisconnected) || errors.Is(err, ErrClosed):
			// The rejoin after the reconnect resumes from lastSeq.
		case errors.As(err, &e) && e.Code == "not_member":
			r.catch = nil
		default:
			c := r.c
			cu.timer = time.AfterFunc(pageRetry, func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				if r.catch == cu && !cu.fetching && c.conn != nil {
					r.fetchLocked()
				}
			})
		}
		return
	}
	var page struct {
		Messages []Message `json:"messages"`
	}
	_ = json.Unmarshal(env.Payload, &page)
	got := false
	for _, m := range page.Messages {
		if m.Seq <= r.lastSeq || m.Seq >= before {
			continue
		}
		if m.Seq != r.lastSeq+1 {
			cu.lost = true // the start of the gap has left the history
		}
		r.deliverLocked(m)
		got = true
	}
	if !got {
		// Nothing of the page is left: skip it if more is known to follow.
		switch {
		case len(cu.held) > 0:
			cu.lost = true
			r.lastSeq = cu.held[0].Seq - 1
		case cu.high >= from:
			cu.lost = true
			r.lastSeq = min(cu.high, before-1)
		}
	}
	r.drainLocked()
	full := r.lastSeq == before-1 && before == from+pageSize
	if cu.again || full || len(cu.held) > 0 || r.lastSeq < cu.high {
		r.fetchLocked()
		return
	}
	// The history has nothing more: that is the room's end, unless the
	// gap's end left the history too. The room.joined of a refresh says
	// where the room is, and every message up to there reaches this client
	// before it (or a room.resync does).
	if !cu.confirming {
		r.refreshLocked(cu)
	}
}

// refreshLocked asks for the member list and the room's seq again: a join
// of a member answers room.joined with them and changes nothing else.
func (r *Room) refreshLocked(cu *catchUp) {
	if r.joining != nil {
		r.finishLocked(cu) // a join is on its way: it says all of that
		return
	}
	cu.confirming = true
	f := r.joinFrameLocked(false)
	r.joining.refresh = true
	r.c.out = append(r.c.out, f)
	r.c.wakeWriterLocked()
	cu.refreshing = r.c.timeoutLocked(f.id, cu, r, errRefreshTimeout)
}

// onRefreshLocked takes in the room.joined of a refresh (or, with err, its
// failure): the member list, reported as a whole, and the room's seq,
// which the catch-up must reach before it is done.
func (r *Room) onRefreshLocked(p Joined, err error) {
	if errors.Is(err, ErrDisconnected) || errors.Is(err, ErrClosed) {
		// Cut off by the connection's end: onDisconnect, which runs next,
		// ends the catch-up, and the rejoin reports again.
		return
	}
	if err == nil {
		r.resetMembersLocked(p.Members, p.Count, p.Presence == "count")
	}
	cu := r.catch
	if cu == nil || !cu.confirming {
		return
	}
	cu.confirming = false
	if cu.refreshing != nil {
		cu.refreshing.Stop()
	}
	if err == nil {
		cu.high = max(cu.high, p.Seq)
	}
	if cu.fetching {
		return // the page's answer goes on from here
	}
	r.drainLocked()
	if cu.again || len(cu.held) > 0 || r.lastSeq < cu.high {
		r.fetchLocked()
		return
	}
	r.finishLocked(cu)
}

// finishLocked ends a catch-up that reached the room's end.
func (r *Room) finishLocked(cu *catchUp) {
	r.catch = nil
	r.reportLocked(Recover{Recovered: !cu.lost, Since: cu.since, Seq: r.lastSeq})
}

// endCatchUpLocked abandons a catch-up (the connection ended, or the room
// was left); a gap found lost is still reported.
func (r *Room) endCatchUpLocked() {
	cu := r.catch
	if cu == nil {
		return
	}
	r.catch = nil
	if cu.timer != nil {
		cu.timer.Stop()
	}
	if cu.refreshing != nil {
		cu.refreshing.Stop()
	}
	if cu.lost {
		r.reportLocked(Recover{Recovered: false, Since: cu.since, Seq: r.lastSeq})
	}
}
