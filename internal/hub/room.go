package hub

import (
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/troupehq/troupe/rooms"
	"github.com/troupehq/troupe/typed"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/troupehq/troupe/internal/session"
)

// roomState is what a room keeps across restarts. The supervisor creates it
// and hands the same pointer to every incarnation of the room actor; only the
// room actor (one incarnation at a time) touches it.
type roomState struct {
	name    string
	members map[string]*session.Session
	order   []*session.Session // join order, for stable member listings
	joins   uint64             // joins processed, see roomEmpty
	size    atomic.Int32       // len(order), for metrics read from other goroutines

	// The room protocol's state (Config.Protocol).
	proto bool
	epoch string        // this incarnation of the room's numbering
	seq   uint64        // the last sequence number given out
	hist  rooms.History // recent messages, for resume and room.history
	trim  rooms.Trimmer // hist, if it takes part in the history budget
	// histBytes is what hist holds as last counted into
	// Manager.histBytes: written by the room actor, read by the
	// supervisor (which owns the state once the room is dormant).
	histBytes atomic.Int64
	meta      map[string]json.RawMessage // by session ID
	// ents is how room.joined lists each member of order (same index),
	// encoded once at its join rather than at every later join.
	ents []memberEntry

	events        []presenceEvent          // joins and leaves since the last presence.diff
	joinedAt      map[*session.Session]int // members that joined since then: the index of the last event each knows
	presenceTimer *time.Timer              // pending presence.diff flush
	presenceDue   time.Time                // when the last window's flush ran
	presenceGen   uint64                   // the pending timer's generation: a flush of another is stale
	held          bool                     // pacing holds the pending window past its own end
	joinersTimer  *time.Timer              // pending flushJoiners of a held window
	joinersGen    uint64                   // its generation
	toldAt        int                      // len(events) at the held window's last flushJoiners that told someone
	localChanged  bool                     // this node's members changed since the last flush

	// The presence mode (see presence.go).
	limit     int  // Config.PresenceLimit (0: always listed)
	counted   bool // counted mode, else listed
	remodeled bool // the mode changed since the last flush
	toldCount int  // the count the last presence.count told (counted mode)
	// The least and greatest count room.joined told in counted mode since
	// the last flush (joinedMin -1: none).
	joinedMin, joinedMax int

	// With a Backplane (see backplane.go); bp is nil without one.
	bp        rooms.Backplane
	feed      *rooms.Feed                      // the room's log, followed while the room runs
	gen       uint64                           // counts feeds, to drop entries of stopped ones
	remote    map[string][]rooms.PresenceEntry // other nodes' members, by node
	watch     func()                           // stops the presence watch
	pub       publisher                        // this node's room.publish queue
	mids      midMemory                        // recent message ids (see once.go)
	failed    error                            // following failed: joins are refused
	parked    []parkedRead                     // reads waiting for the copy to catch up
	readTimer *time.Timer                      // the oldest parked read's deadline
	// syncFailed is when a presence sync for a join last fell short
	// (see presenceSyncPause); zero after one that completed.
	syncFailed time.Time

	// Room logic (see logic.go).
	calls  pendingCalls           // Manager.Call requests in the mailbox
	logic  any                    // the Handler's last Snapshot, for Restore
	gaveUp atomic.Pointer[string] // why the supervisor stopped the room's failing logic
}

// Room is the view of a room that Handler methods receive. It is valid only
// during the call.
type Room struct {
	st *roomState
	m  *Manager
	a  *roomActor
}

// Name returns the room's name.
func (r *Room) Name() string { return r.st.name }

// Members returns the members in join order.
func (r *Room) Members() []*session.Session { return append([]*session.Session(nil), r.st.order...) }

// Len returns the number of members.
func (r *Room) Len() int { return len(r.st.order) }

// Broadcast encodes the envelope once and queues the same bytes on every
// member: with a Backplane, on every node.
func (r *Room) Broadcast(typ string, payload any) error {
	return r.BroadcastExcept(nil, typ, payload)
}

// BroadcastExcept is Broadcast to every member but except.
func (r *Room) BroadcastExcept(except *session.Session, typ string, payload any) error {
	b, err := r.m.encode(typ, payload)
	if err != nil {
		return err
	}
	f := session.Frame{Data: b}
	r.st.fanout(f, except)
	return r.m.signal(r.st.name, f)
}

// fanout queues f on every member but except. It never waits on a member: a
// member whose queue is full is closed with 1013 by its own session, and a
// closed member is removed when its sessionGone arrives.
func (st *roomState) fanout(f session.Frame, except *session.Session) {
	sh := session.Share(f)
	for _, s := range st.order {
		if s != except {
			_ = session.SendShared(s, sh)
		}
	}
}

func (st *roomState) remove(s *session.Session) bool {
	if _, ok := st.members[s.ID()]; !ok {
		return false
	}
	delete(st.members, s.ID())
	if st.bp != nil {
		st.forgetAcked(s.ID())
	}
	for i, m := range st.order {
		if m == s {
			if st.proto {
				copy(st.ents[i:], st.ents[i+1:])
				st.ents[len(st.ents)-1] = memberEntry{}
				st.ents = st.ents[:len(st.ents)-1]
			}
			copy(st.order[i:], st.order[i+1:])
			st.order[len(st.order)-1] = nil
			st.order = st.order[:len(st.order)-1]
			st.size.Store(int32(len(st.order)))
			break
		}
	}
	return true
}

// roomActor is one incarnation of a room. A restart builds a new one around
// the same roomState with a fresh Handler.
type roomActor struct {
	st   *roomState
	m    *Manager
	h    Handler
	self *actor.PID

	timers  map[*roomTimer]struct{} // Room.After and Room.Every of this incarnation
	pruneAt int                     // the size of timers at which cancelled ones are dropped
	done    bool                    // stopping or restarting: no new timers
}

func (a *roomActor) Receive(ctx actor.Context) {
	st := a.st
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.self = ctx.Self()
		if st.bp != nil && st.feed == nil && st.failed == nil {
			a.follow(ctx) // the room starts on this node
		}
		if reason := st.gaveUp.Swap(nil); reason != nil {
			// The supervisor gave up on the logic (giveUp): its members
			// go, and so does the state it kept.
			st.logic = nil
			a.evict(*reason)
		}
		a.started()
		// After a restart: the message that failed may have been the one
		// that emptied the room (or the eviction did).
		if st.joins > 0 {
			a.checkEmpty(ctx)
		}
	case *broadcast:
		st.fanout(msg.frame, msg.except)
	case *joinReq:
		st.joins++
		if st.bp != nil && st.failed != nil && len(st.order) == 0 {
			// The room could not follow its log when it started, and this
			// join reached it before its stop: it tries again, as the join
			// would on the new room after the stop.
			st.failed = nil
			a.follow(ctx)
		}
		if st.bp != nil && st.failed == nil && st.feed != nil {
			if err := a.catchUp(ctx, msg.s, msg.opts); err != nil {
				msg.reply <- err
				a.checkEmpty(ctx)
				return
			}
		}
		if _, dup := st.members[msg.s.ID()]; dup {
			if st.proto && msg.opts != nil {
				st.joined(msg.s, msg.opts, st.bp != nil && !a.syncPresence(ctx))
				// Its list is now the members of this moment: later
				// diffs start from here, as for a new joiner.
				if st.joinedAt == nil {
					st.joinedAt = make(map[*session.Session]int)
				}
				st.joinedAt[msg.s] = len(st.events) - 1
				a.joinerWaiting(ctx)
			}
			msg.reply <- nil
			return
		}
		if st.failed != nil {
			msg.reply <- st.failed
			a.checkEmpty(ctx)
			return
		}
		if max := a.m.cfg.MaxMembers; max > 0 && len(st.order) >= max {
			msg.reply <- ErrRoomFull
			return
		}
		st.members[msg.s.ID()] = msg.s
		st.order = append(st.order, msg.s)
		if st.proto {
			var meta json.RawMessage
			if msg.opts != nil {
				meta = msg.opts.Meta
			}
			st.ents = append(st.ents, newMemberEntry(msg.s, meta))
		}
		st.size.Store(int32(len(st.order)))
		a.m.index.add(msg.s, st.name)
		if !msg.s.IsOpen() {
			// Checked after the index records it: a session that finished
			// before this line is seen closed here, and one that finishes
			// after it finds this room in the index (Manager.sessionEnded).
			st.remove(msg.s)
			a.m.index.remove(msg.s, st.name)
			msg.reply <- session.ErrClosed
			a.checkEmpty(ctx)
			return
		}
		if st.proto {
			o := msg.opts
			if o == nil {
				o = &JoinOptions{}
			}
			e := st.ents[len(st.ents)-1] // this member's, appended above
			if n := len(o.Meta); n > 0 {
				// The entry ends with the meta and '}': kept once.
				end := len(e.entry) - 1
				st.meta[msg.s.ID()] = json.RawMessage(e.entry[end-n : end : end])
			}
			partial := st.bp != nil && !a.syncPresence(ctx)
			st.notePresence(msg.s, true, e.entry)
			if st.bp != nil {
				// Announced before room.joined goes out: a join that
				// arrives on another node after it finds this member.
				st.announce()
				st.localChanged = false
			}
			st.joined(msg.s, o, partial)
			a.presenceChanged(ctx)
			a.joinerWaiting(ctx)
		}
		msg.reply <- nil // in effect: acknowledge before user code runs
		a.call(func(r *Room) { a.h.OnJoin(r, msg.s) })
	case *publishReq:
		// A message sent again is answered before the room's logic could
		// see (and count, or refuse) it a second time, once its first copy
		// is known here (under a backplane: once it is in the log as this
		// node has read it).
		if !st.answerDuplicate(a.m, msg) && a.filterPublish(msg) {
			st.publish(a.m, msg)
		}
	case *callReq:
		a.handleCall(msg)
	case *timerFired:
		a.fired(msg)
	case *actor.Restarting:
		a.stopTimers()
		a.done = true
	case *feedEntry:
		a.fromFeed(ctx, msg)
	case *catchUpMsg:
		a.catchUpTo(ctx, msg.need)
	case *remotePresence:
		a.fromPresence(ctx, msg)
	case *signalMsg:
		st.fromSignal(msg)
	case presenceFlush:
		if st.presenceTimer == nil || msg.gen != st.presenceGen {
			// Its timer was stopped too late to keep it from firing (a
			// message's flush told its window), and a later change may
			// have set another: that one flushes, not this one.
			break
		}
		st.presenceTimer = nil
		st.presenceDue = time.Now()
		st.flushPresence(true)
	case joinersFlush:
		if st.joinersTimer == nil || msg.gen != st.joinersGen {
			break // stale, as presenceFlush's
		}
		st.joinersTimer = nil
		st.flushJoiners()
	case *actor.Stopping:
		a.stopping()
		st.stopPresenceTimers()
		if st.bp != nil {
			st.dropParked()
			st.unfollow()
		}
	case *historyReq:
		a.readHistory(ctx, msg)
	case readDue:
		a.readsDue(ctx)
	case *trimHistory:
		st.trimHistory(a.m, msg.max)
	case *leaveReq:
		if !st.remove(msg.s) {
			msg.reply <- ErrNotMember
			return
		}
		a.m.index.remove(msg.s, st.name)
		a.left(ctx, msg.s)
		msg.reply <- nil
		a.checkEmpty(ctx) // before user code, which may panic
		a.call(func(r *Room) { a.h.OnLeave(r, msg.s) })
	case *sessionGone:
		s := msg.s
		if !st.remove(s) {
			return // it left, or its join was undone
		}
		a.m.index.remove(s, st.name)
		a.left(ctx, s)
		a.checkEmpty(ctx)
		a.call(func(r *Room) { a.h.OnLeave(r, s) })
	case *membersReq:
		msg.reply <- append([]*session.Session(nil), st.order...)
	case *deliver:
		a.call(func(r *Room) { a.h.OnMessage(r, msg.from, msg.msg) })
	}
}

// call runs room logic. A panic is re-raised as a *typed.PanicError naming the
// room, so that protoactor escalates it to the supervisor, which restarts
// this room and tells OnError.
func (a *roomActor) call(fn func(r *Room)) {
	if a.h == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			panic(&typed.PanicError{Room: a.st.name, Value: v})
		}
	}()
	fn(&Room{st: a.st, m: a.m, a: a})
	a.snapshot()
}

// left notes, under the room protocol, that s left; the others hear of it
// with the next presence.diff.
func (a *roomActor) left(ctx actor.Context, s *session.Session) {
	if !a.st.proto {
		return
	}
	if len(a.st.order) == 0 {
		// Nobody left to tell.
		a.st.resetPresence()
	} else {
		a.st.notePresence(s, false, nil) // before meta goes: the entry carries it
		a.presenceChanged(ctx)
	}
	delete(a.st.meta, s.ID())
}

// presenceChanged schedules a presence.diff within the presence window.
func (a *roomActor) presenceChanged(ctx actor.Context) {
	st := a.st
	if st.presenceTimer != nil {
		return
	}
	own, paced := a.presenceWindow()
	st.held = paced > own
	st.presenceGen++
	self, root, msg := ctx.Self(), a.m.root, presenceFlush{gen: st.presenceGen}
	st.presenceTimer = time.AfterFunc(max(own, paced), func() { root.Send(self, msg) })
}

// joinerWaiting has the joiners of a window that pacing holds told about
// one window after the first of them joined, not at the pacing's end
// (flushJoiners): the first joiner since the last such flush sets it.
func (a *roomActor) joinerWaiting(ctx actor.Context) {
	st := a.st
	if !st.held || st.joinersTimer != nil || st.counted {
		return
	}
	own, _ := a.presenceWindow()
	st.joinersGen++
	self, root, msg := ctx.Self(), a.m.root, joinersFlush{gen: st.joinersGen}
	st.joinersTimer = time.AfterFunc(own, func() { root.Send(self, msg) })
}

// presenceWindow returns how long the next window gathers presence
// changes (own), and how long it is held for pacing (paced, 0 if not).
//
// The window grows with the room: every diff is a frame to every member,
// and in a join storm a large room would otherwise wake each of its members
// twenty times a second (measured: 10,000 clients joining 100 rooms went
// 5x slower with a fixed 50 ms window). A room of up to 10 members waits
// the configured window; larger ones wait proportionally longer, up to
// maxPresenceWindow.
//
// And a room whose presence keeps changing is paced: a change after a
// quiet spell is told within its window, one within churnWindows windows
// of the last window's flush is held until churnWindows windows after it.
// Between messages, churn such as one client joining and leaving in a
// loop then costs each other member at most two frames a second (at the
// default 50 ms).
//
// Only the members from before a held window wait for the pacing: each
// joiner of a window gets a diff of its own (the changes after its own
// join), so a window's joiners' diffs grow with the square of their
// number, and held through a join storm they would too (measured, 10,000
// clients joining 100 rooms: 13,600-15,300 bytes of server memory per
// connection, against 11,400-12,400). The joiners of a held window are
// told instead about one window after the first of them joined
// (joinerWaiting, flushJoiners), and from then on share one diff per such
// flush at the pacing's end. A join storm then costs 1.7-1.8 diffs per
// joiner (counted by clients, 5,000 joining 100 rooms: 3.0 without
// pacing, 1.05 with the joiners held too).
//
// Diffs still go out before any room.message, so no member sees a
// message from someone it has not been told about: in a room that carries
// messages, churn costs a diff per message at most.
func (a *roomActor) presenceWindow() (own, paced time.Duration) {
	base := a.m.cfg.PresenceWindow
	own = base
	if n := len(a.st.order); n > 10 {
		own = own * time.Duration(n) / 10
	}
	own = min(own, max(maxPresenceWindow, base))
	if due := a.st.presenceDue; !due.IsZero() {
		paced = time.Until(due.Add(churnWindows * base))
	}
	return own, paced
}

// churnWindows is how many presence windows apart a room's flushes are
// kept while its presence keeps changing.
const churnWindows = 10

// maxPresenceWindow caps presenceWindow's growth.
const maxPresenceWindow = time.Second

// setHistory gives the room the history h, replacing (and uncounting) the
// one it had.
func (st *roomState) setHistory(m *Manager, h rooms.History) {
	st.hist = h
	st.trim, _ = h.(rooms.Trimmer)
	st.account(m)
}

// account counts what the room's history holds into the history budget
// and, if that goes over it, asks the supervisor to reclaim.
func (st *roomState) account(m *Manager) {
	n := int64(st.mids.size())
	if st.trim != nil {
		n += int64(st.trim.Bytes())
	}
	d := n - st.histBytes.Load()
	if d == 0 {
		return
	}
	st.histBytes.Store(n)
	total := m.histBytes.Add(d)
	if b := int64(m.cfg.HistoryBudget); d > 0 && b > 0 && total > b {
		m.overBudget()
	}
}

// trimHistory drops the oldest messages of the room's history until it
// holds at most max bytes (the supervisor's reclaim asks for it).
func (st *roomState) trimHistory(m *Manager, max int) {
	before := st.histBytes.Load()
	if before <= int64(max) {
		return
	}
	max = st.trimMids(m, max)
	if st.trim != nil {
		st.trim.Trim(max)
	}
	st.account(m)
	if freed := before - st.histBytes.Load(); freed > 0 {
		m.trims.Add(1)
		m.trimmedBytes.Add(uint64(freed))
	}
}

func (a *roomActor) checkEmpty(ctx actor.Context) {
	if len(a.st.order) == 0 {
		ctx.Send(ctx.Parent(), &roomEmpty{name: a.st.name, pid: ctx.Self().Id, joins: a.st.joins})
	}
}
