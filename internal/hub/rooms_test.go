package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/typed"
)

// wait bounds every wait that would otherwise hang on a bug; it is never a
// measure of speed.
const wait = 5 * time.Second

// encodeJSON is the envelope encoder the Manager is given: the tests need
// only a stable, decodable wire form, not the typed package.
func encodeJSON(typ string, payload any) ([]byte, error) {
	return json.Marshal(struct {
		Type    string `json:"type"`
		Payload any    `json:"payload,omitempty"`
	}{typ, payload})
}

// envelope is what a member's frame decodes to.
type envelope struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// fixture is one Manager on its own actor system, with every session it
// created, torn down in the order a server would: sessions first, then the
// rooms, then the actor system.
type fixture struct {
	t        *testing.T
	sys      *session.System
	m        *hub.Manager
	encodes  atomic.Int64
	errs     chan error
	sessions []*session.Session
}

func newFixture(t *testing.T, newHandler func(room string) hub.Handler) *fixture {
	t.Helper()
	f := &fixture{t: t, sys: session.NewSystem(nil), errs: make(chan error, 64)}
	f.m = hub.New(f.sys, hub.Config{
		Encode: func(typ string, payload any) ([]byte, error) {
			f.encodes.Add(1)
			return encodeJSON(typ, payload)
		},
		NewHandler: newHandler,
		OnError: func(room string, err error) {
			select {
			case f.errs <- err:
			default:
				t.Errorf("OnError(%q, %v): more errors than the test expects", room, err)
			}
		},
	})
	t.Cleanup(f.close)
	return f
}

func (f *fixture) close() {
	for _, s := range f.sessions {
		session.Finish(s, session.CloseNormal, "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := f.m.Shutdown(ctx); err != nil {
		f.t.Errorf("Shutdown: %v", err)
	}
	f.sys.Shutdown()
}

// member is a session and the in-memory connection it writes to.
type member struct {
	s *session.Session
	c *session.MemConn
}

func (f *fixture) session(id string) member {
	return f.sessionWith(id, session.Options{})
}

func (f *fixture) sessionWith(id string, opts session.Options) member {
	c := session.NewMemConn()
	s := f.sys.NewSession(c, session.Info{ID: id}, opts)
	f.sessions = append(f.sessions, s)
	return member{s: s, c: c}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func (f *fixture) join(room string, ms ...member) {
	f.t.Helper()
	for _, mb := range ms {
		if err := f.m.Join(ctxT(f.t), room, mb.s); err != nil {
			f.t.Fatalf("Join(%q, %s): %v", room, mb.s.ID(), err)
		}
	}
}

func (f *fixture) leave(room string, mb member) {
	f.t.Helper()
	if err := f.m.Leave(ctxT(f.t), room, mb.s); err != nil {
		f.t.Fatalf("Leave(%q, %s): %v", room, mb.s.ID(), err)
	}
}

func (f *fixture) broadcast(room, typ string, payload any) {
	f.t.Helper()
	if err := f.m.Broadcast(room, typ, payload); err != nil {
		f.t.Fatalf("Broadcast(%q, %q): %v", room, typ, err)
	}
}

func (f *fixture) deliver(room string, from member, msg any) {
	f.t.Helper()
	if err := f.m.Deliver(room, from.s, msg); err != nil {
		f.t.Fatalf("Deliver(%q, %v): %v", room, msg, err)
	}
}

// members returns the IDs of room's members, in the order Members gives.
func (f *fixture) members(room string) []string {
	f.t.Helper()
	list, err := f.m.Members(ctxT(f.t), room)
	if err != nil {
		f.t.Fatalf("Members(%q): %v", room, err)
	}
	return ids(list)
}

func ids(list []*session.Session) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		out = append(out, s.ID())
	}
	return out
}

// nextError waits for the next error OnError received.
func (f *fixture) nextError() error {
	f.t.Helper()
	select {
	case err := <-f.errs:
		return err
	case <-time.After(wait):
		f.t.Fatal("OnError was not called")
		return nil
	}
}

// frames waits until mb's connection has at least n frames and returns them
// all.
func frames(t *testing.T, mb member, n int) []session.Frame {
	t.Helper()
	if got := mb.c.WaitCount(n, wait); got < n {
		t.Fatalf("%s: got %d frames, want at least %d: %s", mb.s.ID(), got, n, dump(mb.c.Frames()))
	}
	return mb.c.Frames()
}

// exactly is frames with the further check that no more than n arrived.
func exactly(t *testing.T, mb member, n int) []session.Frame {
	t.Helper()
	fs := frames(t, mb, n)
	if len(fs) != n {
		t.Fatalf("%s: got %d frames, want %d: %s", mb.s.ID(), len(fs), n, dump(fs))
	}
	return fs
}

func dump(fs []session.Frame) string {
	var b bytes.Buffer
	for _, f := range fs {
		b.Write(f.Data)
		b.WriteByte(' ')
	}
	return b.String()
}

func decode(t *testing.T, f session.Frame) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(f.Data, &e); err != nil {
		t.Fatalf("frame %q is not an envelope: %v", f.Data, err)
	}
	return e
}

// texts renders each frame as "type:payload", the form assertions compare.
func texts(t *testing.T, fs []session.Frame) []string {
	t.Helper()
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		e := decode(t, f)
		out = append(out, e.Type+":"+string(e.Payload))
	}
	return out
}

// quiet proves that mb has been sent nothing beyond the want frames it
// already holds, up to now. The caller first makes sure that every room
// fan-out it cares about has run (see settle); a marker sent straight to the
// session then queues behind anything such a fan-out gave it, so once the
// marker is written any stray frame would be in front of it.
func quiet(t *testing.T, mb member, want int) {
	t.Helper()
	marker := fmt.Sprintf(`{"type":"marker","payload":%d}`, time.Now().UnixNano())
	if err := mb.s.SendText([]byte(marker)); err != nil {
		t.Fatalf("%s: SendText(marker): %v", mb.s.ID(), err)
	}
	fs := frames(t, mb, want+1)
	if len(fs) != want+1 || string(fs[want].Data) != marker {
		t.Fatalf("%s: want %d frames then the marker, got %s", mb.s.ID(), want, dump(fs))
	}
}

// settle returns once room has processed everything sent to it before the
// call: Members is answered by the room actor, behind earlier broadcasts.
func (f *fixture) settle(room string) { f.t.Helper(); f.members(room) }

// eventually polls cond until it holds; for state that changes on an event
// the test cannot observe directly (a room noticing that a session closed).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Join is acknowledged once in effect: a broadcast sent right after it
// returns already counts the joiner.
func TestJoinIsInEffectWhenItReturns(t *testing.T) {
	f := newFixture(t, nil)
	host := f.session("host")
	f.join("lobby", host)

	// A broadcast sent right after Join returns must reach the joiner, both
	// in a room that exists and in one the join creates. Many rounds, so
	// that a join acknowledged before the room applied it would show.
	const rounds = 50
	for i := range rounds {
		g := f.session(fmt.Sprintf("guest-%d", i))
		f.join("lobby", g)
		f.broadcast("lobby", "hello", i)
		room := fmt.Sprintf("fresh-%d", i)
		f.join(room, g)
		f.broadcast(room, "first", i)

		// Two rooms fan out independently, so only the set is fixed.
		got := texts(t, exactly(t, g, 2))
		slices.Sort(got)
		want := []string{fmt.Sprintf("first:%d", i), fmt.Sprintf("hello:%d", i)}
		if !slices.Equal(got, want) {
			t.Fatalf("guest %d got %q, want %q", i, got, want)
		}
	}
	if got := len(frames(t, host, rounds)); got != rounds {
		t.Errorf("host got %d frames, want %d", got, rounds)
	}
}

// A repeated Join must not make a member receive every broadcast twice.
func TestJoinTwiceIsOneMembership(t *testing.T) {
	f := newFixture(t, nil)
	a := f.session("a")
	f.join("r", a, a)

	if got := f.members("r"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("Members = %q, want [a]", got)
	}
	f.broadcast("r", "once", nil)
	f.settle("r")
	frames(t, a, 1)
	quiet(t, a, 1)
}

// A session that is already gone cannot become a member that no one can
// reach.
func TestJoinClosedSession(t *testing.T) {
	f := newFixture(t, nil)
	a := f.session("a")
	session.Finish(a.s, session.CloseNormal, "")

	if err := f.m.Join(ctxT(t), "r", a.s); !errors.Is(err, session.ErrClosed) {
		t.Fatalf("Join of a closed session = %v, want ErrClosed", err)
	}
	if got := f.m.RoomsOf(a.s); len(got) != 0 {
		t.Errorf("RoomsOf = %q, want none", got)
	}
}

// After Leave returns, the leaver is out of every later broadcast.
func TestLeave(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.session("a"), f.session("b")
	f.join("r", a, b)
	f.broadcast("r", "before", nil)
	frames(t, a, 1)

	f.leave("r", a)
	f.broadcast("r", "after", nil)
	if got := f.members("r"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("Members after Leave = %q, want [b]", got)
	}
	// Members above also ran the room past the broadcast, so a's frames
	// are final here apart from the marker.
	quiet(t, a, 1)
	if got := texts(t, exactly(t, b, 2)); !slices.Equal(got, []string{"before:", "after:"}) {
		t.Errorf("b got %q", got)
	}
	if got := f.m.RoomsOf(a.s); len(got) != 0 {
		t.Errorf("RoomsOf(a) after Leave = %q, want none", got)
	}
}

// Leave tells a caller whose idea of membership is wrong.
func TestLeaveNotMember(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.session("a"), f.session("b")
	f.join("r", a)
	ctx := ctxT(t)

	if err := f.m.Leave(ctx, "r", b.s); !errors.Is(err, hub.ErrNotMember) {
		t.Errorf("Leave by a non-member = %v, want ErrNotMember", err)
	}
	if err := f.m.Leave(ctx, "nowhere", a.s); !errors.Is(err, hub.ErrNotMember) {
		t.Errorf("Leave of a room that does not exist = %v, want ErrNotMember", err)
	}
	f.join("r", b)
	f.leave("r", b)
	if err := f.m.Leave(ctx, "r", b.s); !errors.Is(err, hub.ErrNotMember) {
		t.Errorf("second Leave = %v, want ErrNotMember", err)
	}
	if got := f.members("r"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Members = %q, want [a]", got)
	}
}

// LeaveAll is what a server calls on disconnect-like events: afterwards the
// session is in no room and hears none of them.
func TestLeaveAll(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.session("a"), f.session("b")
	names := []string{"one", "two", "three"}
	for _, r := range names {
		f.join(r, a, b)
	}

	if err := f.m.LeaveAll(ctxT(t), a.s); err != nil {
		t.Fatalf("LeaveAll: %v", err)
	}
	if got := f.m.RoomsOf(a.s); len(got) != 0 {
		t.Errorf("RoomsOf(a) after LeaveAll = %q, want none", got)
	}
	for _, r := range names {
		if got := f.members(r); !slices.Equal(got, []string{"b"}) {
			t.Errorf("Members(%q) = %q, want [b]", r, got)
		}
		f.broadcast(r, "to", r)
		f.settle(r)
	}
	quiet(t, a, 0)
	if err := f.m.LeaveAll(ctxT(t), a.s); err != nil {
		t.Errorf("LeaveAll of a session in no room: %v", err)
	}
}

// Members is stable, so applications can show a roster that does not jump.
func TestMembersInJoinOrder(t *testing.T) {
	f := newFixture(t, nil)
	var want []string
	var ms []member
	for _, id := range []string{"e", "c", "a", "d", "b"} {
		mb := f.session(id)
		ms = append(ms, mb)
		f.join("r", mb)
		want = append(want, id)
	}
	if got := f.members("r"); !slices.Equal(got, want) {
		t.Fatalf("Members = %q, want join order %q", got, want)
	}

	f.leave("r", ms[2]) // "a", from the middle
	f.join("r", ms[2])  // rejoining puts it last
	want = []string{"e", "c", "d", "b", "a"}
	if got := f.members("r"); !slices.Equal(got, want) {
		t.Fatalf("Members after leave and rejoin = %q, want %q", got, want)
	}

	if got, err := f.m.Members(ctxT(t), "nowhere"); err != nil || len(got) != 0 {
		t.Errorf("Members of a room that does not exist = %q, %v; want none, nil", ids(got), err)
	}
}

// RoomsOf and Rooms are sorted, so listings are deterministic.
func TestRoomsOfAndRoomsSorted(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.session("a"), f.session("b")
	f.join("zeta", a)
	f.join("alpha", a, b)
	f.join("mid", a)
	f.join("beta", b)

	if got, want := f.m.RoomsOf(a.s), []string{"alpha", "mid", "zeta"}; !slices.Equal(got, want) {
		t.Errorf("RoomsOf(a) = %q, want %q", got, want)
	}
	if got, want := f.m.RoomsOf(b.s), []string{"alpha", "beta"}; !slices.Equal(got, want) {
		t.Errorf("RoomsOf(b) = %q, want %q", got, want)
	}
	if got, want := f.m.Rooms(), []string{"alpha", "beta", "mid", "zeta"}; !slices.Equal(got, want) {
		t.Errorf("Rooms() = %q, want %q", got, want)
	}
	if got := f.m.RoomsOf(f.session("c").s); len(got) != 0 {
		t.Errorf("RoomsOf(session in no room) = %q, want none", got)
	}
}

// Empty rooms cost nothing: they disappear, and the name can be used again.
func TestEmptyRoomDisappearsAndComesBack(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.session("a"), f.session("b")
	f.join("stay", b)
	f.join("r", a)
	f.leave("r", a)

	eventually(t, `"r" leaves Rooms()`, func() bool { return !slices.Contains(f.m.Rooms(), "r") })
	if got := f.m.Rooms(); !slices.Equal(got, []string{"stay"}) {
		t.Errorf("Rooms() = %q, want [stay]", got)
	}
	if err := f.m.Deliver("r", a.s, "x"); !errors.Is(err, hub.ErrNoRoom) {
		t.Errorf("Deliver to a vanished room = %v, want ErrNoRoom", err)
	}
	if got := f.members("r"); len(got) != 0 {
		t.Errorf("Members of a vanished room = %q, want none", got)
	}

	f.join("r", a, b)
	if got := f.m.Rooms(); !slices.Equal(got, []string{"r", "stay"}) {
		t.Errorf("Rooms() after rejoin = %q, want [r stay]", got)
	}
	f.broadcast("r", "back", nil)
	for _, mb := range []member{a, b} {
		if got := texts(t, exactly(t, mb, 1)); got[0] != "back:" {
			t.Errorf("%s got %q", mb.s.ID(), got)
		}
	}
}

// A room that empties while the next join is on its way must not swallow
// that join: every cycle's broadcast reaches the member who just joined.
func TestRoomChurn(t *testing.T) {
	f := newFixture(t, nil)
	a := f.session("a")
	const cycles = 200
	for i := range cycles {
		f.join("churn", a)
		f.broadcast("churn", "n", i)
		f.leave("churn", a)
	}
	fs := exactly(t, a, cycles)
	for i, fr := range fs {
		if got, want := string(decode(t, fr).Payload), fmt.Sprint(i); got != want {
			t.Fatalf("frame %d has payload %s, want %s", i, got, want)
		}
	}
	eventually(t, "the churned room is gone", func() bool { return len(f.m.Rooms()) == 0 })
}

// Joins sent straight to a running room race the supervisor stopping it
// when it empties: every join must still land in a live room (none waits
// forever in a stopped actor's mailbox), every leave must find its member,
// and once all have left the room is gone.
func TestConcurrentChurnLosesNoJoin(t *testing.T) {
	f := newFixture(t, nil)
	const sessions, cycles = 8, 300
	ms := make([]member, sessions)
	for i := range ms {
		ms[i] = f.session(fmt.Sprint("s", i))
	}
	errs := make(chan error, sessions)
	for _, mb := range ms {
		go func() {
			for range cycles {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				err := f.m.Join(ctx, "churn", mb.s)
				if err == nil {
					err = f.m.Leave(ctx, "churn", mb.s)
				}
				cancel()
				if err != nil {
					errs <- fmt.Errorf("%s: %w", mb.s.ID(), err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range sessions {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the churned room is gone", func() bool { return len(f.m.Rooms()) == 0 })
}

// A broadcast costs one encoding however many members there are, and every
// member gets the same bytes.
func TestBroadcastEncodesOnce(t *testing.T) {
	f := newFixture(t, nil)
	ms := []member{f.session("a"), f.session("b"), f.session("c"), f.session("d")}
	f.join("r", ms...)

	before := f.encodes.Load()
	f.broadcast("r", "news", map[string]any{"headline": "rooms work", "n": 7})
	if got := f.encodes.Load() - before; got != 1 {
		t.Errorf("Broadcast to %d members encoded %d times, want 1", len(ms), got)
	}

	first := exactly(t, ms[0], 1)[0]
	for _, mb := range ms[1:] {
		if got := exactly(t, mb, 1)[0]; !bytes.Equal(got.Data, first.Data) || got.Binary {
			t.Errorf("%s got %q (binary %v), want the same text frame %q", mb.s.ID(), got.Data, got.Binary, first.Data)
		}
	}
	e := decode(t, first)
	var p struct {
		Headline string
		N        int
	}
	if err := json.Unmarshal(e.Payload, &p); err != nil || e.Type != "news" || p.Headline != "rooms work" || p.N != 7 {
		t.Errorf("frame %s decodes to type %q payload %+v (%v)", first.Data, e.Type, p, err)
	}
}

// An envelope that cannot be encoded is the caller's error and reaches no one.
func TestBroadcastEncodeError(t *testing.T) {
	f := newFixture(t, nil)
	a := f.session("a")
	f.join("r", a)

	err := f.m.Broadcast("r", "bad", make(chan int))
	var unsupported *json.UnsupportedTypeError
	if !errors.As(err, &unsupported) {
		t.Fatalf("Broadcast of an unencodable payload = %v, want the encoder's error", err)
	}
	f.settle("r")
	quiet(t, a, 0)
}

// Without Config.Encode only typed broadcasts fail; raw frames still work.
func TestBroadcastWithoutEncoder(t *testing.T) {
	sys := session.NewSystem(nil)
	defer sys.Shutdown()
	m := hub.New(sys, hub.Config{})
	c := session.NewMemConn()
	s := sys.NewSession(c, session.Info{}, session.Options{})
	defer func() {
		session.Finish(s, session.CloseNormal, "")
		if err := m.Shutdown(ctxT(t)); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	if err := m.Join(ctxT(t), "r", s); err != nil {
		t.Fatal(err)
	}
	if err := m.Broadcast("r", "x", 1); !errors.Is(err, session.ErrNoEncoder) {
		t.Errorf("Broadcast without Config.Encode = %v, want ErrNoEncoder", err)
	}
	// Frames need no encoder.
	m.BroadcastFrame("r", session.Frame{Data: []byte("raw")}, nil)
	if c.WaitCount(1, wait) != 1 || string(c.Frames()[0].Data) != "raw" {
		t.Errorf("BroadcastFrame without an encoder: got %q", dump(c.Frames()))
	}
}

// Broadcasting to a room with no one in it is not an error and creates nothing.
func TestBroadcastToEmptyRoom(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.m.Broadcast("nobody-here", "x", 1); err != nil {
		t.Errorf("Broadcast to a room without members = %v, want nil", err)
	}
	if got := f.m.Rooms(); len(got) != 0 {
		t.Errorf("Broadcast created a room: Rooms() = %q", got)
	}
}

// BroadcastExcept skips exactly the given session (typically the sender).
func TestBroadcastExcept(t *testing.T) {
	f := newFixture(t, nil)
	a, b, c := f.session("a"), f.session("b"), f.session("c")
	f.join("r", a, b, c)

	before := f.encodes.Load()
	if err := f.m.BroadcastExcept("r", b.s, "said", "hi"); err != nil {
		t.Fatal(err)
	}
	if got := f.encodes.Load() - before; got != 1 {
		t.Errorf("BroadcastExcept encoded %d times, want 1", got)
	}
	for _, mb := range []member{a, c} {
		if got := texts(t, exactly(t, mb, 1)); got[0] != `said:"hi"` {
			t.Errorf("%s got %q", mb.s.ID(), got)
		}
	}
	f.settle("r")
	quiet(t, b, 0)

	// A session that is not a member excludes no one.
	outsider := f.session("outsider")
	if err := f.m.BroadcastExcept("r", outsider.s, "all", nil); err != nil {
		t.Fatal(err)
	}
	for _, mb := range []member{a, b, c} {
		frames(t, mb, 2)
	}
}

// BroadcastFrame passes frames through untouched, binary or text.
func TestBroadcastFrame(t *testing.T) {
	f := newFixture(t, nil)
	a, b, c := f.session("a"), f.session("b"), f.session("c")
	f.join("r", a, b, c)

	before := f.encodes.Load()
	data := []byte{0x00, 0xff, 0x10}
	f.m.BroadcastFrame("r", session.Frame{Data: data, Binary: true}, a.s)
	f.m.BroadcastFrame("r", session.Frame{Data: []byte("plain text")}, nil)
	if got := f.encodes.Load() - before; got != 0 {
		t.Errorf("BroadcastFrame called the encoder %d times", got)
	}

	for _, mb := range []member{b, c} {
		fs := exactly(t, mb, 2)
		if !fs[0].Binary || !bytes.Equal(fs[0].Data, data) {
			t.Errorf("%s: first frame %q binary %v, want the binary frame %q", mb.s.ID(), fs[0].Data, fs[0].Binary, data)
		}
		if fs[1].Binary || string(fs[1].Data) != "plain text" {
			t.Errorf("%s: second frame %q binary %v, want the text frame", mb.s.ID(), fs[1].Data, fs[1].Binary)
		}
	}
	fs := exactly(t, a, 1)
	if fs[0].Binary || string(fs[0].Data) != "plain text" {
		t.Errorf("excepted member got %q, want only the text frame", dump(fs))
	}
}

// Concurrent senders to one room: every member sees one and the same order,
// and each sender's messages in the order it sent them.
func TestBroadcastOrderIsTheSameForEveryMember(t *testing.T) {
	f := newFixture(t, nil)
	ms := []member{f.session("a"), f.session("b"), f.session("c"), f.session("d")}
	f.join("r", ms...)

	const senders, each = 4, 100
	type msg struct{ G, N int }
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range senders {
		wg.Go(func() {
			<-start
			for n := range each {
				if err := f.m.Broadcast("r", "n", msg{g, n}); err != nil {
					t.Errorf("Broadcast: %v", err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()

	var first []string
	for i, mb := range ms {
		got := texts(t, exactly(t, mb, senders*each))
		if i == 0 {
			first = got
			next := make([]int, senders)
			for _, tx := range got {
				var m msg
				if err := json.Unmarshal([]byte(tx[len("n:"):]), &m); err != nil {
					t.Fatalf("bad frame %q: %v", tx, err)
				}
				if m.N != next[m.G] {
					t.Fatalf("sender %d: got message %d, want %d", m.G, m.N, next[m.G])
				}
				next[m.G]++
			}
			continue
		}
		if !slices.Equal(got, first) {
			t.Errorf("%s saw a different order than %s", mb.s.ID(), ms[0].s.ID())
		}
	}
}

// A session that closes leaves every room by itself: no Leave call.
func TestClosedSessionLeavesItsRooms(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.session("a"), f.session("b")
	shared := []string{"one", "two", "three"}
	for _, r := range shared {
		f.join(r, a, b)
	}
	f.join("a-only", a)

	session.Finish(a.s, session.CloseAbnormal, "connection lost")

	eventually(t, "the closed session is in no room", func() bool { return len(f.m.RoomsOf(a.s)) == 0 })
	for _, r := range shared {
		eventually(t, fmt.Sprintf("Members(%q) drops the closed session", r), func() bool {
			return slices.Equal(f.members(r), []string{"b"})
		})
	}
	eventually(t, "the room only the closed session was in is gone", func() bool {
		return !slices.Contains(f.m.Rooms(), "a-only")
	})
	if got, want := f.m.Rooms(), []string{"one", "three", "two"}; !slices.Equal(got, want) {
		t.Errorf("Rooms() = %q, want %q", got, want)
	}
	f.broadcast("one", "still", nil)
	if got := texts(t, exactly(t, b, 1)); got[0] != "still:" {
		t.Errorf("b got %q", got)
	}
}

// A session that finishes while its joins are on their way ends up in no
// room, whichever of the two a room sees first: nothing is left holding a
// closed member (or a room alive for it).
func TestSessionFinishingWhileJoiningLeavesNoMembership(t *testing.T) {
	f := newFixture(t, nil)
	stay := f.session("stay")
	f.join("r0", stay)
	const n = 200
	for i := range n {
		mb := f.session(fmt.Sprintf("s%d", i))
		room := fmt.Sprintf("r%d", i%3)
		joined := make(chan error, 1)
		go func() { joined <- f.m.Join(ctxT(t), room, mb.s) }()
		if i%2 == 0 {
			runtime.Gosched()
		}
		session.Finish(mb.s, session.CloseAbnormal, "gone")
		if err := <-joined; err != nil && !errors.Is(err, session.ErrClosed) {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	eventually(t, "only the open session is a member of anything", func() bool {
		return slices.Equal(f.members("r0"), []string{"stay"}) && slices.Equal(f.m.Rooms(), []string{"r0"})
	})
	for _, s := range f.sessions[1:] {
		if got := f.m.RoomsOf(s); len(got) != 0 {
			t.Errorf("finished session %s is still in %q", s.ID(), got)
		}
	}
}

// A slow member is closed with 1013 while the others receive everything:
// a broadcast never waits on a member.
func TestSlowMemberIsClosedOthersKeepReceiving(t *testing.T) {
	f := newFixture(t, nil)
	slowErr := make(chan error, 4)
	slowClose := make(chan int, 1)
	fast := f.session("fast")
	slow := f.sessionWith("slow", session.Options{
		MaxQueuedMessages: 4,
		OnError: func(_ *session.Session, err error) {
			select {
			case slowErr <- err:
			default:
			}
		},
		OnClose: func(_ *session.Session, code int, _ string) { slowClose <- code },
	})
	f.join("r", slow, fast)
	slow.c.Block()

	const n = 100
	for i := range n {
		f.broadcast("r", "tick", i)
	}
	// The slow member is still blocked here: the fast one got every tick.
	fs := exactly(t, fast, n)
	for i, fr := range fs {
		if got := string(decode(t, fr).Payload); got != fmt.Sprint(i) {
			t.Fatalf("fast member's frame %d has payload %s", i, got)
		}
	}

	select {
	case err := <-slowErr:
		if !errors.Is(err, session.ErrSlowConsumer) {
			t.Errorf("slow member's OnError got %v, want ErrSlowConsumer", err)
		}
	case <-time.After(wait):
		t.Fatal("slow member's OnError was not called")
	}
	if slow.s.IsOpen() {
		t.Error("slow member is still open after its queue overflowed")
	}

	// Once the stuck write returns, the close frame carries 1013.
	slow.c.Unblock()
	eventually(t, "the slow member's connection is closed", func() bool {
		closed, _, _ := slow.c.Closed()
		return closed
	})
	if _, code, _ := slow.c.Closed(); code != session.CloseTryAgainLater {
		t.Errorf("slow member closed with %d, want %d", code, session.CloseTryAgainLater)
	}
	// What it did get (possibly nothing: the overflow can come before its
	// writer takes the first frame) is a gap-free prefix of what was sent.
	got := slow.c.Frames()
	if len(got) >= n {
		t.Errorf("slow member got all %d frames despite overflowing", n)
	}
	for i, fr := range got {
		if p := string(decode(t, fr).Payload); p != fmt.Sprint(i) {
			t.Errorf("slow member's frame %d has payload %s: not a prefix", i, p)
		}
	}

	session.Finish(slow.s, session.CloseAbnormal, "") // what the transport does when the socket goes
	select {
	case code := <-slowClose:
		if code != session.CloseTryAgainLater {
			t.Errorf("OnClose code %d, want %d", code, session.CloseTryAgainLater)
		}
	case <-time.After(wait):
		t.Fatal("OnClose not called")
	}
	eventually(t, "the slow member left the room", func() bool {
		return slices.Equal(f.members("r"), []string{"fast"})
	})
}

// tally is room logic with state: who is in, and a running total of the
// numbers delivered to the room.
type tally struct {
	in    []string
	total int
}

func (h *tally) OnJoin(r *hub.Room, s *session.Session) {
	h.in = append(h.in, s.ID())
	_ = r.Broadcast("joined", map[string]any{"who": s.ID(), "in": h.in, "len": r.Len()})
}

func (h *tally) OnLeave(r *hub.Room, s *session.Session) {
	h.in = slices.DeleteFunc(h.in, func(id string) bool { return id == s.ID() })
	_ = r.Broadcast("left", map[string]any{"who": s.ID(), "in": h.in, "len": r.Len()})
}

func (h *tally) OnMessage(r *hub.Room, from *session.Session, msg any) {
	switch v := msg.(type) {
	case int:
		h.total += v
		_ = r.Broadcast("total", h.total)
	case string:
		_ = r.BroadcastExcept(from, "said", v)
	}
}

// Room logic sees joins, leaves (including a close) and delivered messages
// in one order, and keeps its state in plain fields between calls.
func TestHandlerKeepsState(t *testing.T) {
	var made atomic.Int32
	f := newFixture(t, func(room string) hub.Handler {
		made.Add(1)
		return &tally{}
	})
	a, b, c := f.session("a"), f.session("b"), f.session("c")

	f.join("r", a)
	f.join("r", b)
	f.deliver("r", a, 5)
	f.deliver("r", b, 7)
	f.deliver("r", b, "hello")
	f.join("r", c)
	f.leave("r", b)
	session.Finish(c.s, session.CloseNormal, "") // closing counts as leaving
	// The room learns of the close asynchronously; the total must come
	// after the room has seen it.
	eventually(t, "the closed session left", func() bool { return len(f.m.RoomsOf(c.s)) == 0 })
	f.deliver("r", a, 30)

	want := []string{
		`joined:{"in":["a"],"len":1,"who":"a"}`,
		`joined:{"in":["a","b"],"len":2,"who":"b"}`,
		`total:5`,
		`total:12`,
		`said:"hello"`,
		`joined:{"in":["a","b","c"],"len":3,"who":"c"}`,
		`left:{"in":["a","c"],"len":2,"who":"b"}`,
		`left:{"in":["a"],"len":1,"who":"c"}`,
		`total:42`,
	}
	if got := texts(t, exactly(t, a, len(want))); !slices.Equal(got, want) {
		t.Errorf("a got\n%q\nwant\n%q", got, want)
	}
	// b joined second, did not hear its own "hello", and nothing after it left.
	wantB := []string{want[1], want[2], want[3], want[5]}
	if got := texts(t, exactly(t, b, len(wantB))); !slices.Equal(got, wantB) {
		t.Errorf("b got\n%q\nwant\n%q", got, wantB)
	}
	f.settle("r")
	quiet(t, b, len(wantB))
	if n := made.Load(); n != 1 {
		t.Errorf("NewHandler called %d times, want 1", n)
	}
}

// counter is room logic that counts "incr" messages and panics on "boom".
type counter struct{ n int }

func (*counter) OnJoin(*hub.Room, *session.Session)  {}
func (*counter) OnLeave(*hub.Room, *session.Session) {}
func (h *counter) OnMessage(r *hub.Room, _ *session.Session, msg any) {
	switch msg {
	case "boom":
		panic("boom")
	case "incr":
		h.n++
		_ = r.Broadcast("count", h.n)
	}
}

// madeCounter is a NewHandler that counts how often each room's logic was
// created.
type madeCounter struct {
	mu   sync.Mutex
	made map[string]int
	mk   func() hub.Handler
}

func newMadeCounter(mk func() hub.Handler) *madeCounter {
	return &madeCounter{made: make(map[string]int), mk: mk}
}

func (c *madeCounter) newHandler(room string) hub.Handler {
	c.mu.Lock()
	c.made[room]++
	c.mu.Unlock()
	return c.mk()
}

func (c *madeCounter) count(room string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.made[room]
}

// A panic in one room's logic restarts that room with fresh logic and the
// same members, tells OnError, and leaves other rooms alone.
func TestPanicRestartsOnlyThatRoom(t *testing.T) {
	made := newMadeCounter(func() hub.Handler { return &counter{} })
	f := newFixture(t, made.newHandler)
	b1, b2 := f.session("b1"), f.session("b2")
	g1, g2 := f.session("g1"), f.session("g2")
	f.join("bad", b1, b2)
	f.join("good", g1, g2)

	for range 3 {
		f.deliver("good", g1, "incr")
	}
	f.deliver("bad", b1, "incr")
	f.deliver("bad", b1, "boom")

	err := f.nextError()
	var pe *typed.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("OnError got %T %v, want a *typed.PanicError", err, err)
	}
	if pe.Room != "bad" || pe.Value != "boom" {
		t.Errorf("PanicError{Room: %q, Value: %v}, want room \"bad\" and value \"boom\"", pe.Room, pe.Value)
	}

	// The room runs on with the same members and a fresh Handler.
	if got := f.members("bad"); !slices.Equal(got, []string{"b1", "b2"}) {
		t.Errorf("Members(bad) after the panic = %q, want [b1 b2]", got)
	}
	f.broadcast("bad", "after", nil)
	f.deliver("bad", b2, "incr")
	for _, mb := range []member{b1, b2} {
		want := []string{"count:1", "after:", "count:1"}
		if got := texts(t, exactly(t, mb, len(want))); !slices.Equal(got, want) {
			t.Errorf("%s got %q, want %q", mb.s.ID(), got, want)
		}
	}
	if n := made.count("bad"); n != 2 {
		t.Errorf("NewHandler(\"bad\") called %d times, want 2 (start and restart)", n)
	}

	// The other room kept its logic's state and every message.
	f.deliver("good", g2, "incr")
	for _, mb := range []member{g1, g2} {
		want := []string{"count:1", "count:2", "count:3", "count:4"}
		if got := texts(t, exactly(t, mb, len(want))); !slices.Equal(got, want) {
			t.Errorf("%s got %q, want %q", mb.s.ID(), got, want)
		}
	}
	if n := made.count("good"); n != 1 {
		t.Errorf("NewHandler(\"good\") called %d times, want 1", n)
	}
	select {
	case err := <-f.errs:
		t.Errorf("unexpected second OnError: %v", err)
	default:
	}
}

// Only the message that panicked is lost: what was queued behind it is
// handled by the restarted room, in order.
func TestPanicKeepsQueuedMessages(t *testing.T) {
	made := newMadeCounter(func() hub.Handler { return &counter{} })
	f := newFixture(t, made.newHandler)
	ms := []member{f.session("a"), f.session("b"), f.session("c")}
	f.join("r", ms...)

	const k = 100
	f.deliver("r", ms[0], "boom")
	for i := range k {
		f.broadcast("r", "n", i)
	}
	f.deliver("r", ms[0], "incr")
	f.deliver("r", ms[1], "incr")

	var want []string
	for i := range k {
		want = append(want, fmt.Sprintf("n:%d", i))
	}
	want = append(want, "count:1", "count:2")
	for _, mb := range ms {
		if got := texts(t, exactly(t, mb, len(want))); !slices.Equal(got, want) {
			t.Errorf("%s got %d frames %q\nwant %q", mb.s.ID(), len(got), got, want)
		}
	}
	var pe *typed.PanicError
	if err := f.nextError(); !errors.As(err, &pe) || pe.Room != "r" {
		t.Errorf("OnError got %v, want a PanicError for room r", err)
	}
	if n := made.count("r"); n != 2 {
		t.Errorf("NewHandler called %d times, want 2", n)
	}
}

// panicky panics in the method named by on, and announces every join.
type panicky struct{ on string }

func (h *panicky) OnJoin(r *hub.Room, s *session.Session) {
	if h.on == "join" {
		panic("join")
	}
	_ = r.Broadcast("joined", s.ID())
}

func (h *panicky) OnLeave(*hub.Room, *session.Session) {
	if h.on == "leave" {
		panic("leave")
	}
}

func (h *panicky) OnMessage(*hub.Room, *session.Session, any) {}

// A join is acknowledged before OnJoin runs, so a panic there cannot undo it.
func TestPanicInOnJoinKeepsTheMember(t *testing.T) {
	f := newFixture(t, func(string) hub.Handler { return &panicky{on: "join"} })
	a, b := f.session("a"), f.session("b")
	f.join("r", a)
	f.join("r", b)
	for range 2 {
		var pe *typed.PanicError
		if err := f.nextError(); !errors.As(err, &pe) || pe.Room != "r" || pe.Value != "join" {
			t.Errorf("OnError got %v, want a PanicError for room r", err)
		}
	}
	if got := f.members("r"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Members = %q, want [a b]", got)
	}
	f.broadcast("r", "hi", nil)
	for _, mb := range []member{a, b} {
		if got := texts(t, exactly(t, mb, 1)); got[0] != "hi:" {
			t.Errorf("%s got %q", mb.s.ID(), got)
		}
	}
}

// A room whose last member goes is removed even when OnLeave panics for
// that member.
func TestPanicInOnLeaveStillRemovesEmptyRoom(t *testing.T) {
	for _, how := range []string{"leave", "close"} {
		t.Run(how, func(t *testing.T) {
			f := newFixture(t, func(string) hub.Handler { return &panicky{on: "leave"} })
			a := f.session("a")
			f.join("r", a)
			if how == "leave" {
				f.leave("r", a)
			} else {
				session.Finish(a.s, session.CloseNormal, "")
			}
			var pe *typed.PanicError
			if err := f.nextError(); !errors.As(err, &pe) || pe.Room != "r" {
				t.Errorf("OnError got %v, want a PanicError for room r", err)
			}
			if got := f.m.RoomsOf(a.s); len(got) != 0 {
				t.Errorf("RoomsOf = %q, want none", got)
			}
			eventually(t, "the empty room leaves Rooms()", func() bool { return len(f.m.Rooms()) == 0 })
		})
	}
}

// After Shutdown every call reports ErrStopped and no room is listed.
func TestCallsAfterShutdown(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.session("a"), f.session("b")
	f.join("r", a)

	if err := f.m.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ctx := ctxT(t)
	if err := f.m.Join(ctx, "r2", b.s); !errors.Is(err, hub.ErrStopped) {
		t.Errorf("Join after Shutdown = %v, want ErrStopped", err)
	}
	if err := f.m.Leave(ctx, "r", a.s); !errors.Is(err, hub.ErrStopped) {
		t.Errorf("Leave after Shutdown = %v, want ErrStopped", err)
	}
	if _, err := f.m.Members(ctx, "r"); !errors.Is(err, hub.ErrStopped) {
		t.Errorf("Members after Shutdown = %v, want ErrStopped", err)
	}
	if err := f.m.Deliver("r", a.s, "x"); !errors.Is(err, hub.ErrStopped) {
		t.Errorf("Deliver after Shutdown = %v, want ErrStopped", err)
	}
	if err := f.m.Broadcast("r", "x", nil); !errors.Is(err, hub.ErrStopped) {
		t.Errorf("Broadcast after Shutdown = %v, want ErrStopped", err)
	}
	if got := f.m.Rooms(); len(got) != 0 {
		t.Errorf("Rooms() after Shutdown = %q, want none", got)
	}
}

// panicOnLeave is room logic whose OnLeave always panics.
type panicOnLeave struct{ hub.NopHandler }

func (panicOnLeave) OnLeave(*hub.Room, *session.Session) { panic("leave") }

// A room whose OnLeave panics says it is empty twice, on the leave and
// again after the restart: the second word, which may reach the supervisor
// after the room was stopped and a successor started for the next join,
// must not stop that successor with the join in its mailbox.
func TestStaleEmptyRoomWordStopsNoSuccessor(t *testing.T) {
	sys := session.NewSystem(nil)
	m := hub.New(sys, hub.Config{
		Encode:     encodeJSON,
		NewHandler: func(string) hub.Handler { return panicOnLeave{} },
		OnError:    func(string, error) {},
	})
	const n, cycles = 4, 500
	ss := make([]*session.Session, n)
	for i := range ss {
		ss[i] = sys.NewSession(session.NewMemConn(), session.Info{ID: fmt.Sprint("s", i)}, session.Options{})
	}
	defer func() {
		for _, s := range ss {
			session.Finish(s, session.CloseNormal, "")
		}
		_ = m.Shutdown(context.Background())
		sys.Shutdown()
	}()
	errs := make(chan error, n)
	for i, s := range ss {
		room := fmt.Sprint("r", i)
		go func() {
			for c := range cycles {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				err := m.Join(ctx, room, s)
				if err == nil {
					err = m.Leave(ctx, room, s)
				}
				cancel()
				if err != nil {
					errs <- fmt.Errorf("%s, cycle %d: %w", room, c, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
