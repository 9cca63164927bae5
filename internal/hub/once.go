package hub

import (
	"bytes"
	"encoding/json"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Effectively-once publish. A room.publish may carry a message id (mid)
// chosen by the client; the room remembers the mids of its recent
// messages, and a publish whose mid it has seen is not published again:
// it is answered room.published with the seq of the first. A client that
// lost the answer to a publish (a dropped connection, a node that died)
// can then send it again, to any node, without publishing it twice.
//
// The mid travels inside the room.message payload ("mid"), so that the
// log of a room under a Backplane carries it: every node learns the mids
// from the messages it follows, and a node that starts following a room
// learns those of its backlog. Across nodes the check is exact because
// appends to the log are conditional on the log's last message (the
// Backplane numbers a batch after the last message it knows): before a
// batch with mids is appended after seq N, the room makes sure it has
// seen the mids of every message up to N (see coverBatch).
//
// Scope: a mid is matched within its room, whoever sent it. It cannot be
// tied to the session (a reconnect makes a new one) nor to the identity
// (an application may give each connection its own, as the chat example
// does). So mids must be unique in the room and unguessable, as the
// clients' random UUIDs are: a member who reuses another's mid only loses
// its own message (it is answered with the other's seq), and the mids it
// can see, on room.message, belong to messages already published.

// MaxMessageID bounds the length of a mid, in bytes.
const MaxMessageID = 64

// Defaults of Config.DedupeMessages and Config.DedupeWindow.
const (
	DefaultDedupeMessages = 1000
	DefaultDedupeWindow   = 5 * time.Minute
)

// midEntryCost is what remembering a mid costs besides its bytes: its
// queue slot and its map entry.
const midEntryCost = 96

// coverWait bounds how long a publish with mids waits for the room's copy
// of the log to reach the message it will be appended after.
const coverWait = 2 * time.Second

// midEntry is a remembered mid.
type midEntry struct {
	mid string
	seq uint64
	at  time.Time
}

// midMemory is a room's recent mids, oldest first. The room actor records
// the messages of its copy of the log; the backplane publisher records its
// own appends and reads it before appending, hence the lock.
type midMemory struct {
	mu    sync.Mutex
	byMid map[string]uint64 // mid -> position in the queue (see base)
	queue []midEntry
	base  uint64 // position of queue[0]
	bytes int    // what the entries cost, counted into the history budget
	// upTo is the seq up to which every message's mid is known (under a
	// Backplane: the copy of the log has reached it); moved is closed when
	// it advances.
	upTo  uint64
	moved chan struct{}
}

// dedupe reports whether the room remembers mids at all.
func (m *Manager) dedupe() bool { return m.cfg.DedupeWindow > 0 }

// lookup returns the remembered entry of mid, if it is within the window.
func (mm *midMemory) lookup(m *Manager, mid string, now time.Time) (midEntry, bool) {
	mm.evictOld(m, now)
	pos, ok := mm.byMid[mid]
	if !ok {
		return midEntry{}, false
	}
	return mm.queue[pos-mm.base], true
}

// add remembers e, forgetting the oldest mids beyond the count bound.
func (mm *midMemory) add(m *Manager, e midEntry) {
	if _, ok := mm.byMid[e.mid]; ok {
		return // a message seen twice: appended here, then from the log
	}
	if mm.byMid == nil {
		mm.byMid = make(map[string]uint64)
	}
	mm.byMid[e.mid] = mm.base + uint64(len(mm.queue))
	mm.queue = append(mm.queue, e)
	mm.bytes += midEntryCost + len(e.mid)
	for len(mm.queue) > m.cfg.DedupeMessages {
		mm.pop()
		m.midEvictedCount.Add(1)
	}
	mm.evictOld(m, e.at)
}

// evictOld forgets the mids older than the window.
func (mm *midMemory) evictOld(m *Manager, now time.Time) {
	limit := now.Add(-m.cfg.DedupeWindow)
	for len(mm.queue) > 0 && mm.queue[0].at.Before(limit) {
		mm.pop()
		m.midEvictedAge.Add(1)
	}
}

func (mm *midMemory) pop() {
	delete(mm.byMid, mm.queue[0].mid)
	mm.bytes -= midEntryCost + len(mm.queue[0].mid)
	mm.queue[0] = midEntry{}
	mm.queue = mm.queue[1:]
	mm.base++
	if len(mm.queue) == 0 {
		mm.queue = nil // let the backing array go
	}
}

// size is what the remembered mids cost, in bytes.
func (mm *midMemory) size() int {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	return mm.bytes
}

// trimMids shares max bytes between the room's history and its mids, in
// proportion to what each holds, when the history budget asks the room to
// hold no more than max: it forgets the oldest mids beyond their share and
// returns the history's. (The mids count into the budget as the history
// does: a client cannot make rooms keep more than it.)
func (st *roomState) trimMids(m *Manager, max int) int {
	hist := 0
	if st.trim != nil {
		hist = st.trim.Bytes()
	}
	mm := &st.mids
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if mm.bytes == 0 || hist+mm.bytes <= max {
		return max
	}
	keep := int(int64(max) * int64(mm.bytes) / int64(hist+mm.bytes))
	for len(mm.queue) > 0 && mm.bytes > keep {
		mm.pop()
		m.midEvictedBudget.Add(1)
	}
	return max - mm.bytes
}

// advance records that the mids of every message up to seq are known.
func (mm *midMemory) advance(seq uint64) {
	if seq <= mm.upTo {
		return
	}
	mm.upTo = seq
	if mm.moved != nil {
		close(mm.moved)
		mm.moved = nil
	}
}

// reset forgets everything: the log was started again.
func (mm *midMemory) reset() {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	mm.byMid, mm.queue, mm.base, mm.bytes = nil, nil, 0, 0
	mm.upTo = 0
	if mm.moved != nil {
		close(mm.moved)
		mm.moved = nil
	}
}

// waitCovered waits until the mids up to seq are known, or until deadline.
func (mm *midMemory) waitCovered(seq uint64, deadline time.Time) bool {
	for {
		mm.mu.Lock()
		if mm.upTo >= seq {
			mm.mu.Unlock()
			return true
		}
		if mm.moved == nil {
			mm.moved = make(chan struct{})
		}
		moved := mm.moved
		mm.mu.Unlock()
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-moved:
			t.Stop()
		case <-t.C:
			return false
		}
	}
}

// noteMessage records a message of the room's log (its payload as
// messagePayload encodes it): its mid, if any, and that the room has seen
// every message up to it.
func (st *roomState) noteMessage(m *Manager, seq uint64, payload []byte) {
	if m.dedupe() {
		mid, _ := payloadMid(payload)
		st.noteMid(m, seq, mid)
	}
}

// noteMid records message seq of the room, with its mid if not "".
func (st *roomState) noteMid(m *Manager, seq uint64, mid string) {
	if !m.dedupe() || mid == "" && st.bp == nil {
		return // without a Backplane nobody waits for upTo
	}
	mm := &st.mids
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if mid != "" {
		mm.add(m, midEntry{mid: mid, seq: seq, at: time.Now()})
	}
	mm.advance(seq)
}

// duplicateOf returns the seq of the message that r's mid already
// published, if any.
func (st *roomState) duplicateOf(m *Manager, r *publishReq) (seq uint64, ok bool) {
	if r.mid == "" || !m.dedupe() {
		return 0, false
	}
	mm := &st.mids
	mm.mu.Lock()
	e, found := mm.lookup(m, r.mid, time.Now())
	mm.mu.Unlock()
	return e.seq, found
}

// answerDuplicate answers a publish whose mid was published before, with
// the first message's seq, and reports whether it did.
func (st *roomState) answerDuplicate(m *Manager, r *publishReq) bool {
	seq, ok := st.duplicateOf(m, r)
	if !ok {
		return false
	}
	st.answerSeen(m, r, seq)
	return true
}

// answerSeen answers r, a publish already in the room as seq.
func (st *roomState) answerSeen(m *Manager, r *publishReq, seq uint64) {
	m.midDuplicates.Add(1)
	if st.bp != nil {
		st.noteAcked(r.s.ID(), seq)
	}
	if len(r.id) > 0 {
		_ = r.s.SendText(publishedFrame(st.name, seq, r.id))
	}
}

// coverBatch runs in build, before a batch is appended after seq first-1:
// it reports whether the room knows the mids of every message up to there
// and none of the batch's is among them. Otherwise the batch must not be
// appended; dup then holds the seq of each batch member already published
// (by index; 0 where it is not).
func (st *roomState) coverBatch(m *Manager, first uint64, batch []*publishReq, dup []uint64) (covered, clean bool) {
	mm := &st.mids
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if mm.upTo+1 < first {
		return false, false
	}
	clean = true
	now := time.Now()
	for i, r := range batch {
		dup[i] = 0
		if r.mid == "" {
			continue
		}
		if e, ok := mm.lookup(m, r.mid, now); ok {
			dup[i] = e.seq
			clean = false
		}
	}
	return true, clean
}

// notePublished records the mids of a batch appended as first, first+1...
// and, when the room knew every message before it, that it knows these.
func (st *roomState) notePublished(m *Manager, first uint64, batch []*publishReq) {
	mm := &st.mids
	mm.mu.Lock()
	defer mm.mu.Unlock()
	now := time.Now()
	for i, r := range batch {
		if r.mid != "" {
			mm.add(m, midEntry{mid: r.mid, seq: first + uint64(i), at: now})
		}
	}
	if mm.upTo+1 >= first {
		mm.advance(first + uint64(len(batch)) - 1)
	}
}

// Markers of the fields of a room.message payload. A JSON string escapes
// every quote inside it, so the first `,"body":` of a payload is its body
// key (the room and from strings before it cannot hold one), and a `"mid"`
// key before it is the payload's own.
var (
	bodyKey = []byte(`,"body":`)
	midKey  = []byte(`,"mid":`)
)

// payloadMid reads the mid of a room.message payload.
func payloadMid(p []byte) (mid string, ok bool) {
	head := p
	if i := bytes.Index(p, bodyKey); i >= 0 {
		head = p[:i]
	}
	i := bytes.Index(head, midKey)
	if i < 0 {
		return "", false
	}
	q := head[i+len(midKey):]
	if len(q) >= 2 && q[0] == '"' && q[len(q)-1] == '"' && bytes.IndexByte(q[1:len(q)-1], '\\') < 0 && bytes.IndexByte(q[1:len(q)-1], '"') < 0 {
		mid = string(q[1 : len(q)-1]) // no escapes: the bytes are the string
	} else if json.Unmarshal(q, &mid) != nil {
		return "", false
	}
	return mid, mid != ""
}

// publishRemote appends a batch to the room's log, each mid at most once:
// a member of the batch whose mid is already in the log is answered with
// the seq it has there, and the rest are appended. A mid repeated inside
// the batch starts the next batch, so that its first copy is in the log
// (and remembered) by the time it is checked.
func (st *roomState) publishRemote(m *Manager, batch []*publishReq) {
	deadline := time.Now().Add(publishTimeout)
	for len(batch) > 0 {
		n := firstRepeat(batch)
		waitFor, dup := st.appendBatch(m, batch[:n])
		switch {
		case waitFor > 0:
			if !st.mids.waitCovered(waitFor, minTime(deadline, time.Now().Add(coverWait))) &&
				(!m.askCatchUp(st.name, waitFor) || !st.mids.waitCovered(waitFor, minTime(deadline, time.Now().Add(coverWait)))) {
				for _, r := range batch {
					r.refuse(m, st, "unavailable", "room "+st.name+" is catching up with its log; try again")
				}
				return
			}
			continue // try again, now that the room knows the log that far
		case dup != nil:
			rest := batch[:0:0]
			for i, r := range batch[:n] {
				if dup[i] > 0 {
					st.answerSeen(m, r, dup[i])
				} else {
					rest = append(rest, r)
				}
			}
			batch = append(rest, batch[n:]...)
			continue
		}
		batch = batch[n:]
	}
}

// firstRepeat is the length of batch's longest prefix without a repeated
// mid.
func firstRepeat(batch []*publishReq) int {
	var seen map[string]bool
	for i, r := range batch {
		if r.mid == "" {
			continue
		}
		if seen[r.mid] {
			return i
		}
		if seen == nil {
			seen = make(map[string]bool)
		}
		seen[r.mid] = true
	}
	return len(batch)
}

func hasDup(dup []uint64) bool {
	for _, s := range dup {
		if s > 0 {
			return true
		}
	}
	return false
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// catchUpMsg asks a room to follow its log again if its copy is short of
// need: a publish with mids waits for it (its feed may have stalled, for
// example while the log's leader changes).
type catchUpMsg struct{ need uint64 }

// askCatchUp sends catchUpMsg to room's actor, if it runs.
func (m *Manager) askCatchUp(room string, need uint64) bool {
	v, ok := m.live.Load(room)
	if ok {
		m.root.Send(v.(*roomRef).pid, &catchUpMsg{need: need})
	}
	return ok
}

// catchUpTo follows the log again when the copy is short of need.
func (a *roomActor) catchUpTo(ctx actor.Context, need uint64) {
	st := a.st
	if st.bp == nil || st.feed == nil || st.seq >= need {
		return
	}
	if err := a.refollow(ctx); err != nil {
		a.m.logError(st.name, err)
	}
}
