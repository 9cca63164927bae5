package hub

import "github.com/troupehq/troupe/internal/session"

// Messages of the supervisor's and the rooms' mailboxes. Replies travel on
// buffered channels rather than protoactor futures, which cost a process
// registration and a timer each.

type joinReq struct {
	room  string
	s     *session.Session
	opts  *JoinOptions // room protocol only
	reply chan error
}

type leaveReq struct {
	room  string
	s     *session.Session
	reply chan error
}

type membersReq struct {
	room  string
	reply chan []*session.Session
}

type broadcast struct {
	frame  session.Frame
	except *session.Session
}

type deliver struct {
	from *session.Session
	msg  any
}

// roomEmpty tells the supervisor that a room has no members; joins counts the
// joins the room had processed, so the supervisor can tell whether a join is
// still on its way to the room.
type roomEmpty struct {
	name  string
	pid   string // the room actor's PID.Id: a room's successor has another
	joins uint64
}

// presenceFlush asks a room to send its pending presence.diff: the window
// that timer gen closes, if it is still the pending one.
type presenceFlush struct{ gen uint64 }

// joinersFlush asks a room to tell the joiners of a window that pacing
// holds what changed since they joined (roomState.flushJoiners).
type joinersFlush struct{ gen uint64 }

// sessionGone tells a room that one of its members finished (see
// Manager.sessionEnded).
type sessionGone struct{ s *session.Session }

// reclaim asks the supervisor to bring the histories back under the
// history budget (see Manager.overBudget).
type reclaim struct{}

// trimHistory asks a room to trim its history to max bytes.
type trimHistory struct{ max int }

// sweepDue tells the supervisor that the oldest dormant room's retention
// has ended.
type sweepDue struct{}
