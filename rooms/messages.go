package rooms

import "github.com/troupehq/troupe/actors"

// Messages of the supervisor's and the rooms' mailboxes. Replies travel on
// buffered channels rather than protoactor futures, which cost a process
// registration and a timer each.

type joinReq struct {
	room  string
	s     *actors.Session
	opts  *JoinOptions // room protocol only
	reply chan error
}

type leaveReq struct {
	room  string
	s     *actors.Session
	reply chan error
}

type membersReq struct {
	room  string
	reply chan []*actors.Session
}

type broadcast struct {
	frame  actors.Frame
	except *actors.Session
}

type deliver struct {
	from *actors.Session
	msg  any
}

// roomEmpty tells the supervisor that a room has no members; joins counts the
// joins the room had processed, so the supervisor can tell whether a join is
// still on its way to the room.
type roomEmpty struct {
	name  string
	joins uint64
}

// presenceFlush asks a room to send its pending presence.diff.
type presenceFlush struct{}

// sessionGone tells a room that one of its members finished (see
// Manager.sessionEnded).
type sessionGone struct{ s *actors.Session }
