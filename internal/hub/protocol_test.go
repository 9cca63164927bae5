package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/typed"
)

// never is a presence window that does not end within a test: presence is
// then flushed only by a publish, so a test decides exactly which changes
// one diff gathers.
const never = time.Hour

// protoFixture is a Manager with the room protocol on, over in-memory
// connections.
type protoFixture struct {
	t        *testing.T
	sys      *session.System
	m        *hub.Manager
	errs     chan error
	sessions []*session.Session
}

func newProtoFixture(t *testing.T, cfg hub.Config) *protoFixture {
	t.Helper()
	f := &protoFixture{t: t, sys: session.NewSystem(nil), errs: make(chan error, 16)}
	cfg.Protocol = true
	cfg.Encode = encodeJSON
	cfg.OnError = func(room string, err error) {
		select {
		case f.errs <- err:
		default:
			t.Errorf("OnError(%q, %v): more errors than the test expects", room, err)
		}
	}
	f.m = hub.New(f.sys, cfg)
	t.Cleanup(f.close)
	return f
}

func (f *protoFixture) close() {
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

func (f *protoFixture) session(id string) member {
	c := session.NewMemConn()
	s := f.sys.NewSession(c, session.Info{ID: id}, session.Options{})
	f.sessions = append(f.sessions, s)
	return member{s: s, c: c}
}

// join joins mb to room with the protocol's options; id answers nothing
// when empty.
func (f *protoFixture) join(room string, mb member, since *uint64, meta, id string) {
	f.t.Helper()
	o := &hub.JoinOptions{Since: since}
	if meta != "" {
		o.Meta = json.RawMessage(meta)
	}
	if id != "" {
		o.ID = json.RawMessage(id)
	}
	if err := f.m.JoinWith(ctxT(f.t), room, mb.s, o); err != nil {
		f.t.Fatalf("JoinWith(%q, %s): %v", room, mb.s.ID(), err)
	}
}

func (f *protoFixture) leave(room string, mb member) {
	f.t.Helper()
	if err := f.m.Leave(ctxT(f.t), room, mb.s); err != nil {
		f.t.Fatalf("Leave(%q, %s): %v", room, mb.s.ID(), err)
	}
}

func (f *protoFixture) publish(room string, mb member, body, id string) {
	f.t.Helper()
	var rid json.RawMessage
	if id != "" {
		rid = json.RawMessage(id)
	}
	if err := f.m.Publish(room, mb.s, json.RawMessage(body), rid); err != nil {
		f.t.Fatalf("Publish(%q, %s): %v", room, mb.s.ID(), err)
	}
}

func (f *protoFixture) memberIDs(room string) []string {
	f.t.Helper()
	list, err := f.m.Members(ctxT(f.t), room)
	if err != nil {
		f.t.Fatalf("Members(%q): %v", room, err)
	}
	out := make([]string, 0, len(list))
	for _, s := range list {
		out = append(out, hub.MemberID(s))
	}
	slices.Sort(out)
	return out
}

// protoEnv is a frame of the room protocol as a client decodes it.
type protoEnv struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

type memberInfo struct {
	ID   string          `json:"id"`
	Meta json.RawMessage `json:"meta"`
}

type joinedInfo struct {
	Room      string       `json:"room"`
	Seq       uint64       `json:"seq"`
	Count     int          `json:"count"`
	Members   []memberInfo `json:"members"`
	Presence  string       `json:"presence"`
	Recovered *bool        `json:"recovered"`
}

// countInfo is presence.count, and presence.list with its members.
type countInfo struct {
	Room    string       `json:"room"`
	Count   int          `json:"count"`
	Members []memberInfo `json:"members"`
}

type messageInfo struct {
	Room string          `json:"room"`
	Seq  uint64          `json:"seq"`
	From string          `json:"from"`
	Body json.RawMessage `json:"body"`
}

type diffInfo struct {
	Room   string       `json:"room"`
	Joins  []memberInfo `json:"joins"`
	Leaves []memberInfo `json:"leaves"`
}

type historyInfo struct {
	Room     string            `json:"room"`
	Messages []json.RawMessage `json:"messages"`
}

func decodeProto(t *testing.T, f session.Frame) protoEnv {
	t.Helper()
	var e protoEnv
	if err := json.Unmarshal(f.Data, &e); err != nil {
		t.Fatalf("frame %q is not an envelope: %v", f.Data, err)
	}
	return e
}

// as decodes the payload of e, which must be of type typ.
func as[T any](t *testing.T, e protoEnv, typ string) T {
	t.Helper()
	if e.Type != typ {
		t.Fatalf("got %q (payload %s), want %q", e.Type, e.Payload, typ)
	}
	var v T
	if err := json.Unmarshal(e.Payload, &v); err != nil {
		t.Fatalf("payload of %q: %v: %s", typ, err, e.Payload)
	}
	return v
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

// presenceView replays what a client keeps of a room's members from the
// frames it received: the list of room.joined, then each presence.diff's
// joins added and leaves removed. Members are a multiset, as in the
// JavaScript client (several sessions may share an identity), so a join of
// someone already listed counts twice. It returns the member IDs, sorted.
func presenceView(t *testing.T, fs []session.Frame) []string {
	t.Helper()
	list := replayPresence(t, fs).members
	ids := make([]string, 0, len(list))
	for _, m := range list {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

// presenceState is what a client knows of a room's presence: in counted
// mode (room.joined with "presence":"count", then presence.count) the
// count, in listed mode the members.
type presenceState struct {
	counted bool
	count   int
	members []memberInfo
}

// entries is the listed members as "id meta" strings, sorted.
func (p presenceState) entries() []string {
	out := make([]string, 0, len(p.members))
	for _, m := range p.members {
		out = append(out, m.ID+" "+string(m.Meta))
	}
	slices.Sort(out)
	return out
}

// replayPresence replays every presence frame of the room protocol as the
// JavaScript client does: room.joined and presence.list replace the list,
// presence.count switches to counted mode, and a diff's leaves remove the
// entry with the same ID and meta (else the first with the same ID).
func replayPresence(t *testing.T, fs []session.Frame) presenceState {
	t.Helper()
	var p presenceState
	for _, f := range fs {
		e := decodeProto(t, f)
		switch e.Type {
		case "room.joined":
			j := as[joinedInfo](t, e, e.Type)
			p = presenceState{counted: j.Presence == "count", count: j.Count, members: slices.Clone(j.Members)}
		case "presence.count":
			p.counted, p.count = true, as[countInfo](t, e, e.Type).Count
		case "presence.list":
			l := as[countInfo](t, e, e.Type)
			p = presenceState{count: l.Count, members: slices.Clone(l.Members)}
		case "presence.diff":
			d := as[diffInfo](t, e, e.Type)
			p.members = append(p.members, d.Joins...)
			for _, l := range d.Leaves {
				i := slices.IndexFunc(p.members, func(m memberInfo) bool { return m.ID == l.ID && jsonEqual(m.Meta, l.Meta) })
				if i < 0 {
					i = slices.IndexFunc(p.members, func(m memberInfo) bool { return m.ID == l.ID })
				}
				if i >= 0 {
					p.members = slices.Delete(p.members, i, i+1)
				}
			}
			p.count = len(p.members)
		}
	}
	return p
}

// typesOf lists the frames' types, for messages about unexpected frames.
func typesOf(t *testing.T, fs []session.Frame) []string {
	t.Helper()
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, decodeProto(t, f).Type)
	}
	return out
}

func u64(n uint64) *uint64 { return &n }

// framesUntil waits for a frame that satisfies pred and returns mb's frames
// up to and including the first such frame.
func framesUntil(t *testing.T, mb member, pred func(protoEnv) bool) []session.Frame {
	t.Helper()
	for n := 1; ; {
		fs := frames(t, mb, n)
		for i := n - 1; i < len(fs); i++ {
			if pred(decodeProto(t, fs[i])) {
				return fs[:i+1]
			}
		}
		n = len(fs) + 1
	}
}

// isMessage matches the room.message whose body is body.
func isMessage(body string) func(protoEnv) bool {
	return func(e protoEnv) bool {
		if e.Type != "room.message" {
			return false
		}
		var m messageInfo
		return json.Unmarshal(e.Payload, &m) == nil && jsonEqual(m.Body, []byte(body))
	}
}

// untilMarker returns the frames queued on mb so far: it queues a marker
// behind them and waits for it. What a room queues for a join (room.joined
// and the missed messages) is queued before JoinWith returns.
func untilMarker(t *testing.T, mb member) []session.Frame {
	t.Helper()
	marker := fmt.Sprintf(`{"type":"marker","payload":%d}`, time.Now().UnixNano())
	if err := mb.s.SendText([]byte(marker)); err != nil {
		t.Fatalf("%s: SendText(marker): %v", mb.s.ID(), err)
	}
	fs := framesUntil(t, mb, func(e protoEnv) bool { return e.Type == "marker" })
	return fs[:len(fs)-1]
}

// recovered reads room.joined's recovered flag, which must be present.
func recovered(t *testing.T, j joinedInfo) bool {
	t.Helper()
	if j.Recovered == nil {
		t.Fatalf("room.joined of %q has no recovered flag", j.Room)
	}
	return *j.Recovered
}

// A join is answered by room.joined carrying the request id, the room's
// latest seq and the members; with since, the missed messages follow it, in
// order and byte for byte as the members got them, and then the new ones;
// a publish is answered by room.published with the seq of its room.message.
func TestProtocolJoinThenMissedThenNew(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a, b := f.session("a"), f.session("b")

	f.join("r", a, nil, `{"name":"Ann"}`, `"j1"`)
	fs := exactly(t, a, 1)
	e := decodeProto(t, fs[0])
	j := as[joinedInfo](t, e, "room.joined")
	if string(e.ID) != `"j1"` || j.Room != "r" || j.Seq != 0 || recovered(t, j) ||
		len(j.Members) != 1 || j.Members[0].ID != "a" || !jsonEqual(j.Members[0].Meta, []byte(`{"name":"Ann"}`)) {
		t.Fatalf("first join answered %s", fs[0].Data)
	}

	for i := 1; i <= 5; i++ {
		f.publish("r", a, fmt.Sprintf(`{"text":"m%d"}`, i), fmt.Sprintf(`"p%d"`, i))
	}
	fs = exactly(t, a, 11)
	for i := 1; i <= 5; i++ {
		m := as[messageInfo](t, decodeProto(t, fs[2*i-1]), "room.message")
		if m.Room != "r" || m.Seq != uint64(i) || m.From != "a" || !jsonEqual(m.Body, fmt.Appendf(nil, `{"text":"m%d"}`, i)) {
			t.Fatalf("message %d is %s", i, fs[2*i-1].Data)
		}
		ack := decodeProto(t, fs[2*i])
		p := as[messageInfo](t, ack, "room.published")
		if string(ack.ID) != fmt.Sprintf(`"p%d"`, i) || p.Room != "r" || p.Seq != uint64(i) {
			t.Fatalf("publish %d answered %s", i, fs[2*i].Data)
		}
	}
	sentByA := fs[1:]

	f.join("r", b, u64(2), `{"name":"Bob"}`, `"j2"`)
	fs = exactly(t, b, 4)
	e = decodeProto(t, fs[0])
	j = as[joinedInfo](t, e, "room.joined")
	if string(e.ID) != `"j2"` || j.Seq != 5 || !recovered(t, j) || len(j.Members) != 2 ||
		j.Members[0].ID != "a" || j.Members[1].ID != "b" || !jsonEqual(j.Members[1].Meta, []byte(`{"name":"Bob"}`)) {
		t.Fatalf("resuming join answered %s", fs[0].Data)
	}
	for i, want := range []int{3, 4, 5} {
		if got := fs[1+i].Data; string(got) != string(sentByA[2*(want-1)].Data) {
			t.Fatalf("missed message %d: got %s, want %s as the members got it", want, got, sentByA[2*(want-1)].Data)
		}
	}

	f.publish("r", b, `"hello"`, "")
	fs = exactly(t, b, 5)
	if m := as[messageInfo](t, decodeProto(t, fs[4]), "room.message"); m.Seq != 6 || m.From != "b" {
		t.Fatalf("the first live message after the resume is %s", fs[4].Data)
	}
	// a had not been told about b yet: the diff comes before b's message.
	fs = exactly(t, a, 13)
	d := as[diffInfo](t, decodeProto(t, fs[11]), "presence.diff")
	if len(d.Joins) != 1 || d.Joins[0].ID != "b" || len(d.Leaves) != 0 || !jsonEqual(d.Joins[0].Meta, []byte(`{"name":"Bob"}`)) {
		t.Fatalf("a was told %s, want b's join", fs[11].Data)
	}
	if got := b.c.Frames()[4].Data; string(fs[12].Data) != string(got) {
		t.Fatalf("a and b got different copies of message 6: %s / %s", fs[12].Data, got)
	}
	quiet(t, a, 13)
	quiet(t, b, 5)
}

// The missed messages come before any message published while the join is
// on its way, and every message arrives once: the joiner's frames are
// room.joined, then since+1 up to the last one published, without a gap.
func TestProtocolResumeBeforeConcurrentPublishes(t *testing.T) {
	const (
		before = 50  // published before the join
		total  = 250 // published in all
		since  = 20  // the joiner's mark
	)
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a, b := f.session("a"), f.session("b")
	f.join("r", a, nil, "", "")
	for i := 1; i <= before; i++ {
		f.publish("r", a, fmt.Sprint(i), "")
	}
	frames(t, a, 1+before)

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := before + 1; i <= total; i++ {
			if err := f.m.Publish("r", a.s, json.RawMessage(fmt.Sprint(i)), nil); err != nil {
				t.Errorf("Publish %d: %v", i, err)
				return
			}
		}
	}()
	f.join("r", b, u64(since), "", "")
	<-done

	fs := exactly(t, b, 1+total-since)
	j := as[joinedInfo](t, decodeProto(t, fs[0]), "room.joined")
	if j.Seq < before || j.Seq > total || !recovered(t, j) {
		t.Fatalf("room.joined = %s, want seq in %d..%d and recovered", fs[0].Data, before, total)
	}
	for i, fr := range fs[1:] {
		m := as[messageInfo](t, decodeProto(t, fr), "room.message")
		if want := uint64(since + 1 + i); m.Seq != want || string(m.Body) != fmt.Sprint(want) {
			t.Fatalf("frame %d after room.joined (seq %d) is %s, want message %d", i+1, j.Seq, fr.Data, want)
		}
	}
	quiet(t, b, 1+total-since)
}

// Past the history window a resume says recovered: false, with the room's
// latest seq; whatever messages it still sends are in order and newer than
// the mark. A mark within the window recovers; a mark from beyond the
// room's seq (a room that started over) does not.
func TestProtocolResumeOutsideHistory(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never, HistoryMessages: 10})
	a := f.session("a")
	f.join("r", a, nil, "", "")
	for i := 1; i <= 30; i++ {
		f.publish("r", a, fmt.Sprint(i), "")
	}
	frames(t, a, 31)

	cases := []struct {
		since     uint64
		recovered bool
	}{{5, false}, {19, false}, {20, true}, {28, true}, {30, true}, {99, false}}
	for _, c := range cases {
		mb := f.session(fmt.Sprintf("since-%d", c.since))
		f.join("r", mb, u64(c.since), "", "")
		fs := untilMarker(t, mb)
		j := as[joinedInfo](t, decodeProto(t, fs[0]), "room.joined")
		if j.Seq != 30 || recovered(t, j) != c.recovered {
			t.Errorf("since %d: room.joined = %s, want seq 30 and recovered %v", c.since, fs[0].Data, c.recovered)
		}
		last := c.since
		var resent []uint64
		for _, fr := range fs[1:] {
			m := as[messageInfo](t, decodeProto(t, fr), "room.message")
			if m.Seq <= last || m.Seq > 30 {
				t.Errorf("since %d: message %d after %d", c.since, m.Seq, last)
			}
			last = m.Seq
			resent = append(resent, m.Seq)
		}
		if c.recovered && !slices.Equal(resent, span(c.since+1, 30)) {
			t.Errorf("since %d: recovered, but resent %v", c.since, resent)
		}
		f.leave("r", mb)
	}
}

// A session that joins again while a member stays one member and is
// answered room.joined with the request id and the latest seq.
func TestProtocolJoinAgainWhileMember(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a := f.session("a")
	f.join("r", a, nil, "", "")
	f.publish("r", a, `1`, "")
	f.publish("r", a, `2`, "")
	frames(t, a, 3)
	f.join("r", a, nil, "", `"again"`)
	fs := exactly(t, a, 4)
	e := decodeProto(t, fs[3])
	j := as[joinedInfo](t, e, "room.joined")
	if string(e.ID) != `"again"` || j.Seq != 2 || len(j.Members) != 1 || j.Members[0].ID != "a" {
		t.Fatalf("second join answered %s", fs[3].Data)
	}
	if got := f.memberIDs("r"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("members %v", got)
	}
	f.publish("r", a, `3`, "")
	fs = exactly(t, a, 5)
	if m := as[messageInfo](t, decodeProto(t, fs[4]), "room.message"); m.Seq != 3 {
		t.Fatalf("after the second join: %s", fs[4].Data)
	}
	quiet(t, a, 5)
}

// A burst of joins costs the members that were there one presence.diff
// that lists every joiner in join order.
func TestPresenceBurstOfJoinsIsOneDiff(t *testing.T) {
	const joiners = 20
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a := f.session("a")
	f.join("r", a, nil, "", "")
	f.publish("r", a, `"first"`, "") // a is announced
	frames(t, a, 2)
	var want []string
	for i := range joiners {
		mb := f.session(fmt.Sprintf("j%02d", i))
		f.join("r", mb, nil, fmt.Sprintf(`{"n":%d}`, i), "")
		want = append(want, mb.s.ID())
	}
	f.publish("r", a, `"second"`, "")
	fs := exactly(t, a, 4)
	d := as[diffInfo](t, decodeProto(t, fs[2]), "presence.diff")
	var got []string
	for i, m := range d.Joins {
		got = append(got, m.ID)
		if !jsonEqual(m.Meta, fmt.Appendf(nil, `{"n":%d}`, i)) {
			t.Errorf("join %s has meta %s", m.ID, m.Meta)
		}
	}
	if !slices.Equal(got, want) || len(d.Leaves) != 0 {
		t.Fatalf("diff joins %v leaves %v, want joins %v", got, d.Leaves, want)
	}
	if m := as[messageInfo](t, decodeProto(t, fs[3]), "room.message"); string(m.Body) != `"second"` {
		t.Fatalf("after the diff: %s", fs[3].Data)
	}
	quiet(t, a, 4)
}

// Every joiner of a burst ends with the same member list as the room: what
// room.joined listed plus what the diffs then added and removed, counting a
// member twice if it is listed twice.
func TestPresenceBurstJoinersAgreeWithMembers(t *testing.T) {
	const joiners = 5
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a := f.session("a")
	f.join("r", a, nil, "", "")
	f.publish("r", a, `"first"`, "")
	frames(t, a, 2)
	all := []member{a}
	for i := range joiners {
		mb := f.session(fmt.Sprintf("j%d", i))
		f.join("r", mb, nil, "", "")
		all = append(all, mb)
	}
	f.publish("r", a, `"second"`, "")
	want := f.memberIDs("r")
	for _, mb := range all {
		fs := framesUntil(t, mb, isMessage(`"second"`))
		if got := presenceView(t, fs); !slices.Equal(got, want) {
			t.Errorf("%s sees members %v, want %v (frames %v)", mb.s.ID(), got, want, typesOf(t, fs))
		}
	}
}

// A member that joins and leaves within one presence window is never
// announced; one that was announced and leaves is announced as leaving.
func TestPresenceJoinAndLeaveWithinWindowAnnouncesNothing(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a, b, c := f.session("a"), f.session("b"), f.session("c")
	f.join("r", a, nil, "", "")
	f.publish("r", a, `1`, "")
	f.join("r", b, nil, `{"who":"b"}`, "")
	f.leave("r", b)
	f.publish("r", a, `2`, "")
	fs := exactly(t, a, 3)
	for _, fr := range fs[1:] {
		if e := decodeProto(t, fr); e.Type != "room.message" {
			t.Fatalf("a was sent %s, want messages only", fr.Data)
		}
	}

	f.join("r", c, nil, `{"who":"c"}`, "")
	f.publish("r", a, `3`, "") // c is announced
	f.leave("r", c)
	f.publish("r", a, `4`, "")
	fs = exactly(t, a, 7)
	if d := as[diffInfo](t, decodeProto(t, fs[3]), "presence.diff"); len(d.Joins) != 1 || d.Joins[0].ID != "c" || len(d.Leaves) != 0 {
		t.Fatalf("diff before message 3: %s", fs[3].Data)
	}
	d := as[diffInfo](t, decodeProto(t, fs[5]), "presence.diff")
	if len(d.Joins) != 0 || len(d.Leaves) != 1 || d.Leaves[0].ID != "c" || !jsonEqual(d.Leaves[0].Meta, []byte(`{"who":"c"}`)) {
		t.Fatalf("diff before message 4: %s", fs[5].Data)
	}
	quiet(t, a, 7)
	if got := presenceView(t, fs); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("a sees %v", got)
	}
}

// A member that joined while another joiner was not yet announced, and
// that saw it in room.joined, is told when that joiner leaves.
func TestPresenceJoinerLearnsOfEarlierJoinerLeaving(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a, b, c := f.session("a"), f.session("b"), f.session("c")
	f.join("r", a, nil, "", "")
	f.publish("r", a, `1`, "")
	f.join("r", b, nil, "", "")
	f.join("r", c, nil, "", "") // room.joined lists a, b and c
	f.leave("r", b)
	f.publish("r", a, `2`, "")
	want := f.memberIDs("r")
	if !slices.Equal(want, []string{"a", "c"}) {
		t.Fatalf("members %v", want)
	}
	for _, mb := range []member{a, c} {
		fs := framesUntil(t, mb, isMessage(`2`))
		if got := presenceView(t, fs); !slices.Equal(got, want) {
			t.Errorf("%s sees members %v, want %v (frames %s)", mb.s.ID(), got, want, dump(fs))
		}
	}
}

// A member that joins again gets a fresh room.joined, which a client takes
// as its member list: the next diff must start from that list, not repeat
// the changes it already holds.
func TestPresenceJoinAgainStartsFromItsList(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a, b, c := f.session("a"), f.session("b"), f.session("c")
	f.join("r", a, nil, "", "")
	f.join("r", b, nil, "", "")
	f.publish("r", a, `1`, "") // a and b are announced
	f.join("r", c, nil, "", "")
	f.join("r", a, nil, "", `"again"`) // lists a, b and c
	f.publish("r", a, `2`, "")
	want := f.memberIDs("r")
	for _, mb := range []member{a, b, c} {
		fs := framesUntil(t, mb, isMessage(`2`))
		if got := presenceView(t, fs); !slices.Equal(got, want) {
			t.Errorf("%s sees members %v, want %v (frames %s)", mb.s.ID(), got, want, dump(fs))
		}
	}
}

// Without a publish to flush them, presence changes still go out once the
// window ends, batched.
func TestPresenceDiffAfterWindow(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: 20 * time.Millisecond})
	a, b, c := f.session("a"), f.session("b"), f.session("c")
	f.join("r", a, nil, "", "")
	f.join("r", b, nil, "", "")
	f.join("r", c, nil, "", "")
	want := []string{"a", "b", "c"}
	fs := frames(t, a, 2)
	for !slices.Equal(presenceView(t, fs), want) {
		fs = frames(t, a, len(fs)+1)
	}
	for _, fr := range fs[1:] {
		if decodeProto(t, fr).Type != "presence.diff" {
			t.Fatalf("a was sent %s", fr.Data)
		}
	}
	f.leave("r", b)
	want = []string{"a", "c"}
	for !slices.Equal(presenceView(t, fs), want) {
		fs = frames(t, a, len(fs)+1)
	}
}

// A member's id in presence and the from of its messages are its identity
// when one is set, else its session ID; its meta is delivered as sent.
func TestPresenceIdentityAndMeta(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a, b := f.session("sess-a"), f.session("sess-b")
	a.s.SetIdentity("alice")
	const meta = `{"name":"Alice","tags":["x",1,null],"nested":{"k":true}}`
	f.join("r", b, nil, "", "")
	f.publish("r", b, `0`, "")
	f.join("r", a, nil, meta, "")
	f.publish("r", a, `"hi"`, "")

	fs := exactly(t, a, 2)
	j := as[joinedInfo](t, decodeProto(t, fs[0]), "room.joined")
	if len(j.Members) != 2 || j.Members[0].ID != "sess-b" || j.Members[1].ID != "alice" || !jsonEqual(j.Members[1].Meta, []byte(meta)) {
		t.Fatalf("room.joined %s", fs[0].Data)
	}
	if m := as[messageInfo](t, decodeProto(t, fs[1]), "room.message"); m.From != "alice" {
		t.Fatalf("a's message %s, want from alice", fs[1].Data)
	}
	fs = exactly(t, b, 4)
	d := as[diffInfo](t, decodeProto(t, fs[2]), "presence.diff")
	if len(d.Joins) != 1 || d.Joins[0].ID != "alice" || !jsonEqual(d.Joins[0].Meta, []byte(meta)) {
		t.Fatalf("b was told %s", fs[2].Data)
	}
	if m := as[messageInfo](t, decodeProto(t, fs[1]), "room.message"); m.From != "sess-b" {
		t.Fatalf("b's message %s, want from sess-b", fs[1].Data)
	}
}

// An identity set after a member joined (Session.SetIdentity) is what
// later joiners' room.joined lists, with the meta it joined with.
func TestProtocolJoinedListsIdentitySetAfterJoin(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a, b, c := f.session("sess-a"), f.session("sess-b"), f.session("sess-c")
	f.join("r", a, nil, `{"n":1}`, "")
	f.join("r", b, nil, "", "")
	a.s.SetIdentity("alice")
	f.join("r", c, nil, "", "")
	a.s.SetIdentity("alice2")
	f.join("r", c, nil, "", "") // joined again: listed anew

	fs := exactly(t, c, 2)
	for i, want := range []string{"alice", "alice2"} {
		j := as[joinedInfo](t, decodeProto(t, fs[i]), "room.joined")
		if len(j.Members) != 3 || j.Members[0].ID != want || !jsonEqual(j.Members[0].Meta, []byte(`{"n":1}`)) ||
			j.Members[1].ID != "sess-b" || j.Members[2].ID != "sess-c" {
			t.Fatalf("room.joined %d: %s, want %s first", i, fs[i].Data, want)
		}
	}
}

// Publishing to a room one is not in is answered not_member with the
// request id and takes no sequence number; to a room that does not exist,
// Publish itself says ErrNotMember.
func TestProtocolPublishNotMember(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a, b := f.session("a"), f.session("b")
	f.join("r", a, nil, "", "")
	f.publish("r", b, `"intruder"`, `7`)
	fs := exactly(t, b, 1)
	e := decodeProto(t, fs[0])
	p := as[struct{ Code string }](t, e, "error")
	if string(e.ID) != "7" || p.Code != "not_member" {
		t.Fatalf("b was answered %s", fs[0].Data)
	}
	f.publish("r", a, `"member"`, "")
	fs = exactly(t, a, 2)
	if m := as[messageInfo](t, decodeProto(t, fs[1]), "room.message"); m.Seq != 1 {
		t.Fatalf("first message after a refused publish: %s", fs[1].Data)
	}
	if err := f.m.Publish("nowhere", a.s, json.RawMessage(`1`), nil); !errors.Is(err, hub.ErrNotMember) {
		t.Fatalf("Publish to a room that does not exist: %v, want ErrNotMember", err)
	}
	quiet(t, b, 1)
}

// History pages backwards from before, the newest limit messages below it
// in ascending order, each exactly as it was sent to the members; a
// non-member is answered not_member.
func TestProtocolHistoryPaging(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never})
	a, b := f.session("a"), f.session("b")
	f.join("r", a, nil, "", "")
	for i := 1; i <= 20; i++ {
		f.publish("r", a, fmt.Sprintf(`{"i":%d}`, i), "")
	}
	sent := frames(t, a, 21)[1:]
	payloadOfSeq := func(seq uint64) string { return string(decodeProto(t, sent[seq-1]).Payload) }

	cases := []struct {
		before uint64
		limit  int
		want   []uint64
	}{
		{15, 5, span(10, 14)},
		{0, 3, span(18, 20)},
		{4, 10, span(1, 3)},
		{1, 10, nil},
		{0, 100, span(1, 20)},
	}
	n := 21
	for i, c := range cases {
		if err := f.m.History("r", a.s, c.before, c.limit, fmt.Appendf(nil, `"h%d"`, i)); err != nil {
			t.Fatalf("History: %v", err)
		}
		n++
		e := decodeProto(t, frames(t, a, n)[n-1])
		h := as[historyInfo](t, e, "room.history")
		if string(e.ID) != fmt.Sprintf(`"h%d"`, i) || h.Room != "r" || len(h.Messages) != len(c.want) {
			t.Errorf("before %d limit %d: got %s, want %v", c.before, c.limit, e.Payload, c.want)
			continue
		}
		for k, seq := range c.want {
			if string(h.Messages[k]) != payloadOfSeq(seq) {
				t.Errorf("before %d limit %d: message %d is %s, want %s", c.before, c.limit, k, h.Messages[k], payloadOfSeq(seq))
			}
		}
	}

	if err := f.m.History("r", b.s, 0, 10, json.RawMessage(`"hb"`)); err != nil {
		t.Fatalf("History for a non-member: %v", err)
	}
	e := decodeProto(t, exactly(t, b, 1)[0])
	if p := as[struct{ Code string }](t, e, "error"); p.Code != "not_member" || string(e.ID) != `"hb"` {
		t.Fatalf("non-member asking for history was answered %s %s", e.ID, e.Payload)
	}
	if err := f.m.History("nowhere", a.s, 0, 10, nil); !errors.Is(err, hub.ErrNotMember) {
		t.Fatalf("History of a room that does not exist: %v, want ErrNotMember", err)
	}
}

// A room whose last member left keeps its seq and history for the
// retention: a member that comes back resumes. With a negative retention
// the room starts over from seq 0.
func TestProtocolDormantRoomResumes(t *testing.T) {
	for _, c := range []struct {
		name      string
		retention time.Duration
	}{{"kept", 0}, {"not kept", -1}} {
		t.Run(c.name, func(t *testing.T) {
			f := newProtoFixture(t, hub.Config{PresenceWindow: never, Retention: c.retention})
			a, b := f.session("a"), f.session("b")
			f.join("r", a, nil, "", "")
			for i := 1; i <= 3; i++ {
				f.publish("r", a, fmt.Sprint(i), "")
			}
			frames(t, a, 4)
			f.leave("r", a)
			eventually(t, "the empty room stops", func() bool { return len(f.m.Rooms()) == 0 })

			f.join("r", b, u64(1), "", "")
			f.publish("r", b, `"back"`, "")
			kept := c.retention >= 0
			n := 2
			if kept {
				n = 4
			}
			fs := exactly(t, b, n)
			j := as[joinedInfo](t, decodeProto(t, fs[0]), "room.joined")
			last := as[messageInfo](t, decodeProto(t, fs[n-1]), "room.message")
			if kept {
				if j.Seq != 3 || !recovered(t, j) || last.Seq != 4 {
					t.Fatalf("rejoin of a dormant room: %s", dump(fs))
				}
				for i, fr := range fs[1:3] {
					if m := as[messageInfo](t, decodeProto(t, fr), "room.message"); m.Seq != uint64(i+2) || m.From != "a" {
						t.Fatalf("resent %s, want message %d", fr.Data, i+2)
					}
				}
			} else if j.Seq != 0 || recovered(t, j) || last.Seq != 1 {
				t.Fatalf("rejoin of a room that was not kept: %s", dump(fs))
			}
		})
	}
}

// panicOn is room logic that panics on the message "boom".
type panicOn struct{ hub.NopHandler }

func (panicOn) OnMessage(_ *hub.Room, _ *session.Session, msg any) {
	if msg == "boom" {
		panic("boom")
	}
}

// A room whose logic panics between publishes restarts with its seq and
// history: the messages go on without a gap or a repeat.
func TestProtocolPanicKeepsSequenceAndHistory(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never,
		NewHandler: func(string) hub.Handler { return panicOn{} }})
	a := f.session("a")
	f.join("r", a, nil, "", "")
	for i := 1; i <= 6; i++ {
		f.publish("r", a, fmt.Sprint(i), "")
		if i%2 == 0 {
			if err := f.m.Deliver("r", a.s, "boom"); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
		}
	}
	for range 3 {
		select {
		case err := <-f.errs:
			var pe *typed.PanicError
			if !errors.As(err, &pe) || pe.Room != "r" {
				t.Fatalf("OnError got %v", err)
			}
		case <-time.After(wait):
			t.Fatal("OnError was not told of the panic")
		}
	}
	if err := f.m.History("r", a.s, 0, 100, json.RawMessage(`1`)); err != nil {
		t.Fatalf("History: %v", err)
	}
	fs := exactly(t, a, 8)
	for i, fr := range fs[1:7] {
		if m := as[messageInfo](t, decodeProto(t, fr), "room.message"); m.Seq != uint64(i+1) || string(m.Body) != fmt.Sprint(i+1) {
			t.Fatalf("message %d is %s", i+1, fr.Data)
		}
	}
	h := as[historyInfo](t, decodeProto(t, fs[7]), "room.history")
	if len(h.Messages) != 6 {
		t.Fatalf("history after the restarts: %s", fs[7].Data)
	}
	for i, m := range h.Messages {
		if string(m) != string(decodeProto(t, fs[1+i]).Payload) {
			t.Fatalf("history message %d is %s, want %s", i, m, decodeProto(t, fs[1+i]).Payload)
		}
	}
	if got := f.memberIDs("r"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("members after the restarts: %v", got)
	}
}

// span returns the sequence numbers from..to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// A room whose presence keeps changing is paced: one member joining and
// leaving in a loop costs the others at most one presence.diff per ten
// presence windows, and their lists still end exact; after a quiet spell,
// a change is told within its window again.
func TestPresenceChurnIsPaced(t *testing.T) {
	const window = 20 * time.Millisecond
	const gap = 10 * window // the pacing under test
	f := newProtoFixture(t, hub.Config{PresenceWindow: window})
	a, b := f.session("a"), f.session("b")
	f.join("r", a, nil, "", "")
	start := time.Now()
	for time.Since(start) < 3*gap {
		f.join("r", b, nil, "", "")
		f.leave("r", b)
	}
	// b is gone: a's list says so once the window still due is out.
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(presenceView(t, a.c.Frames()), []string{"a"}) {
		if time.Now().After(deadline) {
			t.Fatalf("a sees %v, want [a]: %s", presenceView(t, a.c.Frames()), dump(a.c.Frames()))
		}
		time.Sleep(window)
	}
	elapsed := time.Since(start)
	diffs := 0
	for _, fr := range a.c.Frames() {
		if decodeProto(t, fr).Type == "presence.diff" {
			diffs++
		}
	}
	// Windows end at least gap apart: elapsed/gap + 1 of them at most.
	if most := int(elapsed/gap) + 1; diffs > most {
		t.Errorf("a got %d presence.diffs in %v of churn, want at most %d", diffs, elapsed.Round(time.Millisecond), most)
	}
	t.Logf("%d presence.diffs in %v", diffs, elapsed.Round(time.Millisecond))

	// Quiet for longer than the gap: the next join is told within its
	// window, not held for the gap (a bound far under the gap, far over
	// the window).
	time.Sleep(gap + window)
	n := a.c.Count()
	f.join("r", b, nil, "", "")
	joined := time.Now()
	if got := a.c.WaitCount(n+1, 10*time.Second); got <= n {
		t.Fatal("a was not told of b's join")
	}
	if took := time.Since(joined); took > gap*3/4 {
		t.Errorf("a was told of a join after a quiet spell in %v, want within its window (%v), well under the gap (%v)",
			took.Round(time.Millisecond), window, gap)
	}
	if got := presenceView(t, a.c.Frames()); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("a sees %v, want [a b]", got)
	}
}

// Pacing holds only the members from before a window: its joiners (each
// of which gets a diff of its own, so that their diffs would grow with the
// square of their number if held) are told at the window's own end, and
// every list ends exact.
func TestPresenceJoinersAreNotHeld(t *testing.T) {
	const window = 20 * time.Millisecond
	const gap = 10 * window
	f := newProtoFixture(t, hub.Config{PresenceWindow: window})
	a, b := f.session("a"), f.session("b")
	f.join("r", a, nil, "", "")
	f.join("r", b, nil, "", "")
	want := []string{"a", "b"}
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(presenceView(t, a.c.Frames()), want) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// A window just ended: the next one is held.
	var joiners []member
	var joined time.Time
	told := make(chan time.Time, 1)
	for i := range 24 {
		s := f.session(fmt.Sprintf("s%02d", i))
		f.join("r", s, nil, "", "")
		if i == 0 {
			joined = time.Now()
			go func() { // its first frame after room.joined
				s.c.WaitCount(2, 10*time.Second)
				told <- time.Now()
			}()
		}
		joiners = append(joiners, s)
		want = append(want, s.s.ID())
		time.Sleep(time.Millisecond) // a storm over more than one window
	}
	slices.Sort(want)
	// The first joiner hears of those after it about a window after its join.
	if took := (<-told).Sub(joined); took > gap*3/4 {
		t.Errorf("the first joiner was told of the joins after its own after %v, want about a window (%v), well under the pacing's %v",
			took.Round(time.Millisecond), window, gap)
	}
	// Everyone, a and b included, ends with every member, and stays so
	// past the pacing: no diff is told twice.
	everyone := append([]member{a, b}, joiners...)
	waitViews(t, everyone, want, deadline)
	time.Sleep(gap + 2*window)
	waitViews(t, everyone, want, deadline)
}

// waitViews waits until each of members sees want.
func waitViews(t *testing.T, members []member, want []string, deadline time.Time) {
	t.Helper()
	for _, mb := range members {
		for !slices.Equal(presenceView(t, mb.c.Frames()), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %v, want %v: %s", mb.s.ID(), presenceView(t, mb.c.Frames()), want, dump(mb.c.Frames()))
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A join from a member already in the room answers room.joined again and
// keeps the meta it joined with; nobody is told of a change.
func TestJoinAgainKeepsMeta(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: time.Millisecond})
	ann, bob := f.session("ann"), f.session("bob")
	f.join("r", ann, nil, `{"v":"first"}`, "")
	f.join("r", bob, nil, `{"v":"bob"}`, "")
	frames(t, ann, 2) // room.joined, then the diff with bob
	f.join("r", ann, nil, `{"v":"second"}`, "")
	fs := frames(t, ann, 3)
	want := []string{`ann {"v":"first"}`, `bob {"v":"bob"}`}
	if got := replayPresence(t, fs).entries(); !slices.Equal(got, want) {
		t.Fatalf("ann's list after joining again: %v, want %v: %s", got, want, dump(fs))
	}
	// A message flushes any presence still due before it reaches bob.
	f.publish("r", bob, `"hi"`, "")
	fs = framesUntil(t, bob, isMessage(`"hi"`))
	if got := typesOf(t, fs); !slices.Equal(got, []string{"room.joined", "room.message"}) {
		t.Errorf("bob got %v, want room.joined then the message: nothing of ann's second join", got)
	}
	if got := replayPresence(t, fs).entries(); !slices.Equal(got, want) {
		t.Errorf("bob's list: %v, want %v", got, want)
	}
}

// churn joins and leaves members of room "r" at random, ops times, now
// and then pausing up to 3 ms; one time in four a member already in joins
// again, with a meta of its own, and one leave in eight is its session
// ending instead (a new session takes its place in all). It returns the
// members in at the end, each with the meta of the join that made it a
// member: a join while in answers room.joined again and leaves the meta
// as it was.
func churn(f *protoFixture, all []member, rng *rand.Rand, ops int) map[int]string {
	in := map[int]string{}
	for op := range ops {
		i := rng.IntN(len(all))
		_, ok := in[i]
		switch {
		case !ok || rng.IntN(4) == 0:
			meta := fmt.Sprintf(`{"v":%d}`, rng.IntN(2))
			if !ok {
				in[i] = meta
			}
			f.join("r", all[i], nil, meta, "")
		case rng.IntN(8) == 0:
			session.Finish(all[i].s, session.CloseNormal, "")
			all[i] = f.session(fmt.Sprintf("m%d-%d", i, op))
			delete(in, i)
		default:
			f.leave("r", all[i])
			delete(in, i)
		}
		if rng.IntN(3) == 0 {
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		}
	}
	return in
}

// waitPresence waits until every one of in's members, replaying its
// frames, holds a state that ok accepts.
func waitPresence(t *testing.T, all []member, in map[int]string, deadline time.Time, ok func(presenceState) bool) {
	t.Helper()
	for i := range in {
		for st := replayPresence(t, all[i].c.Frames()); !ok(st); st = replayPresence(t, all[i].c.Frames()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: counted %v, count %d, members %v; the room's members %v: %s", all[i].s.ID(), st.counted, st.count, st.entries(), in, dump(all[i].c.Frames()))
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// listedAs is the listed state of exactly in's members with their meta.
func listedAs(all []member, in map[int]string) func(presenceState) bool {
	var want []string
	for i, meta := range in {
		want = append(want, all[i].s.ID()+" "+meta)
	}
	slices.Sort(want)
	return func(st presenceState) bool { return !st.counted && slices.Equal(st.entries(), want) }
}

// Whatever the timing of joins, leaves and rejoins against held windows,
// every member's list ends as the room's members, each with its meta:
// random churn of eight members (joins, joins again, leaves, sessions
// ending) with windows of 2 ms held up to 20 ms.
func TestPresenceExactUnderPacing(t *testing.T) {
	const window = 2 * time.Millisecond
	f := newProtoFixture(t, hub.Config{PresenceWindow: window})
	var all []member
	for i := range 8 {
		all = append(all, f.session(fmt.Sprintf("m%d", i)))
	}
	in := churn(f, all, rand.New(rand.NewPCG(3, 4)), 300)
	deadline := time.Now().Add(10 * time.Second)
	waitPresence(t, all, in, deadline, listedAs(all, in))
	time.Sleep(12 * window) // past a pacing still due
	waitPresence(t, all, in, deadline, listedAs(all, in))
}

// The same churn across PresenceLimit: with a limit of 4 the room of
// eight sessions keeps switching to counted (above 4 members) and back
// to listed (at 2), under pacing. Every member ends with the room as it
// is: in counted mode its count, back in listed mode every member with
// its meta.
func TestPresenceExactAcrossTheLimit(t *testing.T) {
	const window = 2 * time.Millisecond
	for _, tc := range []struct {
		name   string
		end    func(f *protoFixture, all []member, in map[int]string)
		listed bool
	}{
		{"ends counted", func(f *protoFixture, all []member, in map[int]string) {
			for i := range all {
				if _, ok := in[i]; !ok {
					in[i] = `{"v":2}`
					f.join("r", all[i], nil, in[i], "")
				}
			}
			// A change of the count once the room is counted: only a
			// presence.count can tell it.
			time.Sleep(12 * window)
			f.leave("r", all[0])
			delete(in, 0)
		}, false},
		{"ends listed", func(f *protoFixture, all []member, in map[int]string) {
			for i := range in {
				if len(in) <= 2 {
					break
				}
				f.leave("r", all[i])
				delete(in, i)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newProtoFixture(t, hub.Config{PresenceWindow: window, PresenceLimit: 4})
			var all []member
			for i := range 8 {
				all = append(all, f.session(fmt.Sprintf("m%d", i)))
			}
			in := churn(f, all, rand.New(rand.NewPCG(5, 6)), 300)
			tc.end(f, all, in)
			ok := listedAs(all, in)
			if !tc.listed {
				ok = func(st presenceState) bool { return st.counted && st.count == len(in) }
			}
			deadline := time.Now().Add(10 * time.Second)
			waitPresence(t, all, in, deadline, ok)
			time.Sleep(12 * window) // past a pacing still due
			waitPresence(t, all, in, deadline, ok)
			// The churn crossed the limit both ways.
			seen := map[string]bool{}
			for _, mb := range all {
				for _, typ := range typesOf(t, mb.c.Frames()) {
					seen[typ] = true
				}
			}
			if !seen["presence.count"] || !seen["presence.list"] {
				t.Errorf("frame types %v: want presence.count and presence.list among them", seen)
			}
		})
	}
}
