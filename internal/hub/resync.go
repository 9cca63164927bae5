package hub

import "github.com/troupehq/troupe/internal/session"

// Room traffic is queued on members as such (session.ShareRoom), with the
// seq of the room's message before it: a member whose queue overflows with
// it is sent a room.resync (the last seq before what it lost) instead of
// being closed, when the server's policy is to resync, and catches up from
// the history.

// fanoutMessage queues the room.message frame data, of sequence number seq,
// on every member.
func (st *roomState) fanoutMessage(data []byte, seq uint64) {
	sh := session.ShareRoom(session.Frame{Data: data}, st.name, seq-1)
	for _, s := range st.order {
		_ = session.SendShared(s, sh)
	}
}

// sendMessage queues the room.message frame data, of sequence number seq,
// on s alone (the messages a resume asked for).
func (st *roomState) sendMessage(s *session.Session, data []byte, seq uint64) {
	_ = session.SendShared(s, session.ShareRoom(session.Frame{Data: data}, st.name, seq-1))
}

// sharePresence makes a presence.diff frame into room traffic: it follows
// the room's message st.seq.
func (st *roomState) sharePresence(data []byte) *session.Shared {
	return session.ShareRoom(session.Frame{Data: data}, st.name, st.seq)
}
