package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/typed"
)

// The room protocol's payloads, decoded as a client would.

type presenceEntry struct {
	ID   string          `json:"id"`
	Meta json.RawMessage `json:"meta"`
}

type joinedPayload struct {
	Room      string          `json:"room"`
	Seq       uint64          `json:"seq"`
	Epoch     string          `json:"epoch"`
	Members   []presenceEntry `json:"members"`
	Recovered *bool           `json:"recovered"`
	Count     *int            `json:"count"`
	Presence  string          `json:"presence"` // "partial", "count" or none

	msgsBefore int // room.message frames the client had for the room before this one
}

type roomMessage struct {
	Room string          `json:"room"`
	Seq  uint64          `json:"seq"`
	From string          `json:"from"`
	Body json.RawMessage `json:"body"`

	raw json.RawMessage // the whole payload, as received
}

type diffPayload struct {
	Room   string          `json:"room"`
	Joins  []presenceEntry `json:"joins"`
	Leaves []presenceEntry `json:"leaves"`
}

// presencePayload is presence.count's and presence.list's.
type presencePayload struct {
	Room    string          `json:"room"`
	Count   int             `json:"count"`
	Members []presenceEntry `json:"members"`
}

type publishedPayload struct {
	Room string `json:"room"`
	Seq  uint64 `json:"seq"`
}

type historyPayload struct {
	Room     string            `json:"room"`
	Messages []json.RawMessage `json:"messages"`
}

// roomView is what a client application keeps of one room.
type roomView struct {
	// members is a multiset, as in the JavaScript client: several sessions
	// may share an identity. room.joined replaces it; a presence.diff adds
	// its joins, then removes its leaves (matching id and meta first).
	members []presenceEntry
	msgs    []roomMessage
	joined  []joinedPayload
	// strangers are the senders of messages that arrived while the sender
	// was not in members: a member must be told of a member before it sees
	// its messages. In counted mode members is a page, not kept: nobody
	// is a stranger.
	strangers []string
	counted   bool     // room.joined said "presence":"count", or a presence.count came
	count     int      // the room's count, as room.joined and presence.count told it
	frames    []string // the types of the room's frames, in the order they came
}

func (v *roomView) ids() []string {
	out := make([]string, 0, len(v.members))
	for _, m := range v.members {
		out = append(out, m.ID)
	}
	slices.Sort(out)
	return out
}

func (v *roomView) has(id string) bool {
	return slices.ContainsFunc(v.members, func(m presenceEntry) bool { return m.ID == id })
}

// peer is a client of the room protocol. It takes in every frame in the
// order it arrived, keeps the state of each room it hears about, and keeps
// the answers to its requests by id until they are taken.
type peer struct {
	*client
	sid      string // the ID of its session on the server
	identity string // what Authorize made of it ("" if nothing)
	nextID   int
	rooms    map[string]*roomView
	answers  map[string]envelope
}

// dialPeer connects a reading client named name; identity, if not empty, is
// sent in the X-User header the protocol tests' Authorize reads.
func (h *testServer) dialPeer(t *testing.T, name, identity string) *peer {
	t.Helper()
	opts := h.dialOptions(name)
	if identity != "" {
		opts.HTTPHeader.Set("X-User", identity)
	}
	c := h.dialWith(t, name, opts)
	c.startReading()
	s := h.rec.session(t, name)
	return &peer{client: c, sid: s.ID(), identity: identity, rooms: map[string]*roomView{}, answers: map[string]envelope{}}
}

// memberID is how the protocol must name this peer: its identity, else its
// session ID.
func (p *peer) memberID() string {
	if p.identity != "" {
		return p.identity
	}
	return p.sid
}

func (p *peer) view(room string) *roomView {
	v := p.rooms[room]
	if v == nil {
		v = &roomView{}
		p.rooms[room] = v
	}
	return v
}

// pump takes in the next frame.
func (p *peer) pump(t *testing.T) {
	t.Helper()
	e := p.nextEnvelope(t)
	switch e.Type {
	case "room.joined":
		j := decodePayload[joinedPayload](t, e)
		v := p.view(j.Room)
		j.msgsBefore = len(v.msgs)
		v.joined = append(v.joined, j)
		v.members = slices.Clone(j.Members)
		v.counted = j.Presence == "count"
		if j.Count != nil {
			v.count = *j.Count
		}
		v.frames = append(v.frames, e.Type)
	case "presence.count", "presence.list":
		c := decodePayload[presencePayload](t, e)
		v := p.view(c.Room)
		v.count = c.Count
		v.counted = e.Type == "presence.count"
		if !v.counted {
			v.members = slices.Clone(c.Members)
		}
		v.frames = append(v.frames, e.Type)
	case "presence.diff":
		d := decodePayload[diffPayload](t, e)
		v := p.view(d.Room)
		v.frames = append(v.frames, e.Type)
		v.members = append(v.members, d.Joins...)
		for _, l := range d.Leaves {
			i := slices.IndexFunc(v.members, func(m presenceEntry) bool { return m.ID == l.ID && jsonEqual(m.Meta, l.Meta) })
			if i < 0 {
				i = slices.IndexFunc(v.members, func(m presenceEntry) bool { return m.ID == l.ID })
			}
			if i >= 0 {
				v.members = slices.Delete(v.members, i, i+1)
			}
		}
	case "room.message":
		m := decodePayload[roomMessage](t, e)
		m.raw = e.Payload
		v := p.view(m.Room)
		if !v.counted && !v.has(m.From) {
			v.strangers = append(v.strangers, m.From)
		}
		v.msgs = append(v.msgs, m)
		v.frames = append(v.frames, e.Type)
	}
	if len(e.ID) > 0 && string(e.ID) != "null" {
		if _, dup := p.answers[string(e.ID)]; dup {
			t.Errorf("%s: a second answer to id %s: %s %s", p.name, e.ID, e.Type, e.Payload)
		}
		p.answers[string(e.ID)] = e
	}
}

// post sends a request and returns its id (raw JSON) without waiting.
func (p *peer) post(t *testing.T, typ string, payload any) string {
	t.Helper()
	p.nextID++
	id := fmt.Sprintf(`"%s-%d"`, p.name, p.nextID)
	p.write(t, mustEnvelope(t, typ, payload, json.RawMessage(id)))
	return id
}

// await takes in frames until the answer to id arrived, and returns it.
func (p *peer) await(t *testing.T, id string) envelope {
	t.Helper()
	for {
		if e, ok := p.answers[id]; ok {
			delete(p.answers, id)
			return e
		}
		p.pump(t)
	}
}

func (p *peer) request(t *testing.T, typ string, payload any) envelope {
	t.Helper()
	return p.await(t, p.post(t, typ, payload))
}

func joinRequest(room string, since *uint64, meta any) map[string]any {
	m := map[string]any{"room": room}
	if since != nil {
		m["since"] = *since
	}
	if meta != nil {
		m["meta"] = meta
	}
	return m
}

// joinRoom joins room and returns room.joined.
func (p *peer) joinRoom(t *testing.T, room string, since *uint64, meta any) joinedPayload {
	t.Helper()
	return p.joinedAnswer(t, p.request(t, "room.join", joinRequest(room, since, meta)))
}

// leaveRoom leaves room, which must answer room.left.
func (p *peer) leaveRoom(t *testing.T, room string) {
	t.Helper()
	if e := p.request(t, "room.leave", map[string]string{"room": room}); e.Type != "room.left" {
		t.Fatalf("%s: leave answered %s %s", p.name, e.Type, e.Payload)
	}
}

func (p *peer) joinedAnswer(t *testing.T, e envelope) joinedPayload {
	t.Helper()
	if e.Type != "room.joined" {
		t.Fatalf("%s: join answered %s %s", p.name, e.Type, e.Payload)
	}
	j := decodePayload[joinedPayload](t, e)
	if j.Recovered == nil {
		t.Fatalf("%s: room.joined without recovered: %s", p.name, e.Payload)
	}
	return j
}

// publish publishes body to room and returns the seq room.published gave.
func (p *peer) publish(t *testing.T, room string, body any) uint64 {
	t.Helper()
	e := p.request(t, "room.publish", map[string]any{"room": room, "body": body})
	if e.Type != "room.published" {
		t.Fatalf("%s: publish to %q answered %s %s", p.name, room, e.Type, e.Payload)
	}
	ack := decodePayload[publishedPayload](t, e)
	if ack.Room != room || ack.Seq == 0 {
		t.Fatalf("%s: room.published %s", p.name, e.Payload)
	}
	return ack.Seq
}

// waitSeq takes in frames until room's message seq (or a later one) arrived.
func (p *peer) waitSeq(t *testing.T, room string, seq uint64) {
	t.Helper()
	for {
		if v := p.rooms[room]; v != nil && len(v.msgs) > 0 && v.msgs[len(v.msgs)-1].Seq >= seq {
			return
		}
		p.pump(t)
	}
}

// expectError checks that e is an error envelope with code.
func expectError(t *testing.T, what string, e envelope, code string) {
	t.Helper()
	if e.Type != "error" {
		t.Errorf("%s: answered %s %s, want error %s", what, e.Type, e.Payload, code)
		return
	}
	if p := decodePayload[errorPayload](t, e); p.Code != code {
		t.Errorf("%s: error %+v, want code %s", what, p, code)
	}
}

func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return len(a) == 0 && len(b) == 0
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

func seqsOf(msgs []roomMessage) []uint64 {
	out := make([]uint64, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, m.Seq)
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// serverMemberIDs is the room's membership as the server has it, named the
// way the protocol must name members: identity if set, else session ID.
func serverMemberIDs(t *testing.T, srv *troupe.Server, room string) []string {
	t.Helper()
	list, err := srv.Members(context.Background(), room)
	if err != nil {
		t.Fatalf("Members(%q): %v", room, err)
	}
	out := make([]string, 0, len(list))
	for _, s := range list {
		id := s.Identity()
		if id == "" {
			id = s.ID()
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

type pubBody struct {
	P int `json:"p"`
	N int `json:"n"`
}

// TestProtocolSameOrderForEveryMember checks that with several publishers
// on their own connections publishing at once, every member of the room
// gets the same messages in the same order, numbered 1..N without a gap,
// each publisher's messages in the order it sent them and from its member
// id, and that each room.published carries the seq of its room.message.
func TestProtocolSameOrderForEveryMember(t *testing.T) {
	const (
		members      = 10
		publishers   = 6
		perPublisher = 150
		total        = publishers * perPublisher
		room         = "busy"
	)
	// Room enough in each outbound queue for every message at once: this
	// test is about order, not about slow consumers.
	h := startServer(t, troupe.Config{RoomProtocol: true, Settings: troupe.Settings{MaxQueuedMessages: 4 * total}})
	peers := make([]*peer, members)
	for i := range peers {
		peers[i] = h.dialPeer(t, fmt.Sprintf("member-%d", i), "")
		peers[i].joinRoom(t, room, nil, map[string]int{"n": i})
	}

	publishAtOnceAndCheck(t, room, peers, peers[:publishers], perPublisher)
}

// publishAtOnceAndCheck has every publisher write perPublisher room.publish
// frames at once, each from its own goroutine, then checks what a user
// would: every member got the same messages in the same order, numbered
// 1..N without a gap, each publisher's in the order it sent them and from
// its member id, and each room.published carries its message's seq.
func publishAtOnceAndCheck(t *testing.T, room string, peers, pubs []*peer, perPublisher int) {
	t.Helper()
	publishers := len(pubs)
	total := publishers * perPublisher
	ids := make([][]string, publishers)
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for i, p := range pubs {
		frames := make([][]byte, perPublisher)
		ids[i] = make([]string, perPublisher)
		for n := range perPublisher {
			p.nextID++
			ids[i][n] = fmt.Sprintf(`"%s-%d"`, p.name, p.nextID)
			frames[n] = mustEnvelope(t, "room.publish", map[string]any{"room": room, "body": pubBody{P: i, N: n}}, json.RawMessage(ids[i][n]))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, f := range frames {
				if err := p.writeErr(f); err != nil {
					errs <- fmt.Errorf("%s: %w", p.name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	for _, p := range peers {
		for len(p.view(room).msgs) < total {
			p.pump(t)
		}
	}
	ref := peers[0].view(room).msgs
	if got := seqsOf(ref); !slices.Equal(got, seqRange(1, uint64(total))) {
		t.Fatalf("%s got seqs %v..., want 1..%d", peers[0].name, got[:min(len(got), 20)], total)
	}
	next := make([]int, publishers)
	seqOf := map[pubBody]uint64{}
	for _, m := range ref {
		var b pubBody
		if err := json.Unmarshal(m.Body, &b); err != nil || b.P < 0 || b.P >= publishers {
			t.Fatalf("message %d has body %s", m.Seq, m.Body)
		}
		if b.N != next[b.P] {
			t.Fatalf("message %d is publisher %d's #%d, want #%d: a publisher's order was not kept", m.Seq, b.P, b.N, next[b.P])
		}
		next[b.P]++
		if m.From != pubs[b.P].memberID() {
			t.Fatalf("message %d from %q, want publisher %d's id %q", m.Seq, m.From, b.P, pubs[b.P].memberID())
		}
		seqOf[b] = m.Seq
	}
	for _, p := range peers[1:] {
		got := p.view(room).msgs
		if len(got) != total {
			t.Fatalf("%s got %d messages, want %d", p.name, len(got), total)
		}
		for i := range got {
			if got[i].Seq != ref[i].Seq || got[i].From != ref[i].From || string(got[i].Body) != string(ref[i].Body) {
				t.Fatalf("%s: message %d is %s, but %s got %s", p.name, i, got[i].raw, peers[0].name, ref[i].raw)
			}
		}
	}
	for i, p := range pubs {
		for n, id := range ids[i] {
			e := p.await(t, id)
			if e.Type != "room.published" {
				t.Fatalf("%s: publish #%d answered %s %s", p.name, n, e.Type, e.Payload)
			}
			if ack := decodePayload[publishedPayload](t, e); ack.Room != room || ack.Seq != seqOf[pubBody{P: i, N: n}] {
				t.Fatalf("%s: publish #%d acknowledged with %s, but its room.message has seq %d", p.name, n, e.Payload, seqOf[pubBody{P: i, N: n}])
			}
		}
	}
}

// TestProtocolResumeAfterReconnect checks that a client that comes back on
// a new connection and joins with since = the last seq it saw gets
// room.joined with recovered: true and the latest seq, then exactly the
// messages it missed, once each and in order, and then the messages
// published while it was joining, without a gap.
func TestProtocolResumeAfterReconnect(t *testing.T) {
	const (
		room   = "resume"
		missed = 7
		live   = 50
	)
	h := startServer(t, troupe.Config{RoomProtocol: true})
	pub := h.dialPeer(t, "publisher", "")
	pub.joinRoom(t, room, nil, nil)
	away := h.dialPeer(t, "away-1", "")
	away.joinRoom(t, room, nil, nil)
	var last uint64
	for i := range 5 {
		last = pub.publish(t, room, fmt.Sprintf("before %d", i))
	}
	away.waitSeq(t, room, last)
	seen := away.view(room).msgs[len(away.view(room).msgs)-1].Seq

	awayS := h.rec.session(t, "away-1")
	away.shutdown()
	h.rec.waitClose(t, awayS)
	var missedBodies []string
	for i := range missed {
		body := fmt.Sprintf("missed %d", i)
		missedBodies = append(missedBodies, body)
		last = pub.publish(t, room, body)
	}

	// Another member publishes while the client rejoins.
	chatty := h.dialPeer(t, "chatty", "")
	chatty.joinRoom(t, room, nil, nil)
	done := make(chan error, 1)
	go func() {
		for i := range live {
			if err := chatty.writeErr(mustEnvelope(t, "room.publish", map[string]any{"room": room, "body": fmt.Sprintf("live %d", i)}, nil)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	back := h.dialPeer(t, "away-2", "")
	j := back.joinRoom(t, room, &seen, nil)
	if err := <-done; err != nil {
		t.Fatalf("chatty: %v", err)
	}
	final := last + live
	if !*j.Recovered || j.Seq < last || j.Seq > final {
		t.Fatalf("rejoin answered seq %d recovered %v, want recovered and seq in %d..%d", j.Seq, *j.Recovered, last, final)
	}
	if j.msgsBefore != 0 {
		t.Fatalf("%d messages arrived before room.joined", j.msgsBefore)
	}
	back.waitSeq(t, room, final)
	msgs := back.view(room).msgs
	if got := seqsOf(msgs); !slices.Equal(got, seqRange(seen+1, final)) {
		t.Fatalf("after the rejoin got seqs %v, want %d..%d once each", got, seen+1, final)
	}
	for i, body := range missedBodies {
		if !jsonEqual(msgs[i].Body, fmt.Appendf(nil, "%q", body)) || msgs[i].From != pub.memberID() {
			t.Fatalf("missed message %d is %s, want %q from the publisher", i, msgs[i].raw, body)
		}
	}
	for i, m := range msgs[missed:] {
		if !jsonEqual(m.Body, fmt.Appendf(nil, "%q", fmt.Sprintf("live %d", i))) || m.From != chatty.memberID() {
			t.Fatalf("live message %d is %s", i, m.raw)
		}
	}
}

// TestProtocolResumePastHistoryWindow checks that a client that missed
// more than the room keeps is told recovered: false with the latest seq,
// that whatever it is still sent is in order and newer than its mark, and
// that live messages follow.
func TestProtocolResumePastHistoryWindow(t *testing.T) {
	const room = "window"
	h := startServer(t, troupe.Config{RoomProtocol: true, HistoryMessages: 10})
	pub := h.dialPeer(t, "publisher", "")
	pub.joinRoom(t, room, nil, nil)
	away := h.dialPeer(t, "away-1", "")
	away.joinRoom(t, room, nil, nil)
	pub.publish(t, room, "one")
	seen := pub.publish(t, room, "two")
	away.waitSeq(t, room, seen)
	awayS := h.rec.session(t, "away-1")
	away.shutdown()
	h.rec.waitClose(t, awayS)
	var last uint64
	for i := range 30 {
		last = pub.publish(t, room, i)
	}

	back := h.dialPeer(t, "away-2", "")
	j := back.joinRoom(t, room, &seen, nil)
	if *j.Recovered || j.Seq != last {
		t.Fatalf("rejoin past the window answered seq %d recovered %v, want seq %d, recovered false", j.Seq, *j.Recovered, last)
	}
	liveSeq := pub.publish(t, room, "live")
	back.waitSeq(t, room, liveSeq)
	msgs := back.view(room).msgs
	prev := seen
	for _, m := range msgs {
		if m.Seq <= prev {
			t.Fatalf("after the rejoin got seqs %v: not ascending after %d", seqsOf(msgs), seen)
		}
		prev = m.Seq
	}
	if msgs[len(msgs)-1].Seq != liveSeq {
		t.Fatalf("the live message is not last: %v", seqsOf(msgs))
	}
}

// TestProtocolEmptyRoomKeepsSequence checks that a room whose only member
// went away keeps its seq and history for HistoryRetention: a member that
// comes back resumes, and room.history still has the old messages. With a
// negative HistoryRetention the room starts over from seq 0.
func TestProtocolEmptyRoomKeepsSequence(t *testing.T) {
	const room = "lonely"
	for _, c := range []struct {
		name      string
		retention time.Duration
	}{{"kept", 0}, {"not kept", -1}} {
		t.Run(c.name, func(t *testing.T) {
			h := startServer(t, troupe.Config{RoomProtocol: true, HistoryRetention: c.retention})
			solo := h.dialPeer(t, "solo-1", "")
			solo.joinRoom(t, room, nil, nil)
			var sent []json.RawMessage
			for i := range 4 {
				seq := solo.publish(t, room, fmt.Sprintf("m%d", i))
				solo.waitSeq(t, room, seq)
				sent = append(sent, solo.view(room).msgs[len(solo.view(room).msgs)-1].raw)
			}
			soloS := h.rec.session(t, "solo-1")
			solo.shutdown()
			h.rec.waitClose(t, soloS)
			eventually(t, "the empty room to stop", func() bool { return !slices.Contains(h.srv.Rooms(), room) })

			back := h.dialPeer(t, "solo-2", "")
			since := uint64(2)
			j := back.joinRoom(t, room, &since, nil)
			seq := back.publish(t, room, "again")
			back.waitSeq(t, room, seq)
			hist := back.request(t, "room.history", map[string]any{"room": room, "limit": 100})
			if hist.Type != "room.history" {
				t.Fatalf("room.history answered %s %s", hist.Type, hist.Payload)
			}
			msgs := decodePayload[historyPayload](t, hist).Messages
			if c.retention < 0 {
				if j.Seq != 0 || *j.Recovered || seq != 1 || len(msgs) != 1 {
					t.Fatalf("a room not kept came back with seq %d recovered %v, next seq %d, history %d messages; want a fresh room",
						j.Seq, *j.Recovered, seq, len(msgs))
				}
				return
			}
			if j.Seq != 4 || !*j.Recovered || seq != 5 {
				t.Fatalf("a kept room came back with seq %d recovered %v, next seq %d; want 4, true, 5", j.Seq, *j.Recovered, seq)
			}
			if got := seqsOf(back.view(room).msgs); !slices.Equal(got, []uint64{3, 4, 5}) {
				t.Fatalf("after the rejoin got seqs %v, want 3 4 5", got)
			}
			if len(msgs) != 5 {
				t.Fatalf("history has %d messages, want 5", len(msgs))
			}
			for i, m := range sent {
				if !jsonEqual(msgs[i], m) {
					t.Fatalf("history message %d is %s, want %s", i, msgs[i], m)
				}
			}
		})
	}
}

// bomb is room logic that panics on the message "boom" and when the client
// named "bomber" joins.
type bomb struct{ troupe.NopRoomHandler }

func (bomb) OnMessage(_ *troupe.Room, _ *troupe.Session, msg any) {
	if msg == "boom" {
		panic("boom")
	}
}

func (bomb) OnJoin(_ *troupe.Room, s *troupe.Session) {
	if s.Header().Get(clientHeader) == "bomber" {
		panic("bomber joined")
	}
}

type roomName struct {
	Room string `json:"room"`
}

// TestProtocolRoomPanicKeepsSequenceAndHistory checks that a room whose
// logic panics, in OnMessage or in OnJoin, restarts with its members and
// goes on numbering messages where it was, without a gap or a repeat, and
// that its history is the same before and after.
func TestProtocolRoomPanicKeepsSequenceAndHistory(t *testing.T) {
	const room = "fragile"
	h := startServer(t, troupe.Config{RoomProtocol: true, NewRoomHandler: func(string) troupe.RoomHandler { return bomb{} }})
	troupe.Handle(h.srv, "boom", func(c *troupe.Context, m roomName) error {
		return c.Server().DeliverToRoom(m.Room, c.Session(), "boom")
	})
	a := h.dialPeer(t, "a", "")
	a.joinRoom(t, room, nil, nil)
	b := h.dialPeer(t, "b", "")
	b.joinRoom(t, room, nil, nil)
	for i := 1; i <= 4; i++ {
		a.publish(t, room, i)
	}
	histBefore := decodePayload[historyPayload](t, a.request(t, "room.history", map[string]any{"room": room})).Messages
	if len(histBefore) != 4 {
		t.Fatalf("history before the panics has %d messages", len(histBefore))
	}

	// The panic and the next publishes are queued together: the room
	// restarts with them in its mailbox.
	boomID := a.post(t, "boom", roomName{Room: room})
	var ids []string
	for i := 5; i <= 8; i++ {
		ids = append(ids, a.post(t, "room.publish", map[string]any{"room": room, "body": i}))
	}
	if e := a.await(t, boomID); e.Type != "reply" {
		t.Fatalf("boom answered %s %s", e.Type, e.Payload)
	}
	for i, id := range ids {
		if e := a.await(t, id); e.Type != "room.published" || decodePayload[publishedPayload](t, e).Seq != uint64(5+i) {
			t.Fatalf("publish %d after the panic answered %s %s", 5+i, e.Type, e.Payload)
		}
	}
	bomber := h.dialPeer(t, "bomber", "")
	bomber.joinRoom(t, room, nil, nil)
	h.rec.waitFor(t, "OnError to hear of both panics", func() bool {
		n := 0
		for _, e := range h.rec.errs {
			var pe *troupe.PanicError
			if e.s == nil && errors.As(e.err, &pe) && pe.Room == room {
				n++
			}
		}
		return n == 2
	})
	seq := b.publish(t, room, 9)
	if seq != 9 {
		t.Fatalf("the publish after both panics got seq %d, want 9", seq)
	}
	want := []string{a.memberID(), b.memberID(), bomber.memberID()}
	slices.Sort(want)
	if got := serverMemberIDs(t, h.srv, room); !slices.Equal(got, want) {
		t.Fatalf("members after the panics: %v, want %v", got, want)
	}
	for _, p := range []*peer{a, b} {
		p.waitSeq(t, room, 9)
		if got := seqsOf(p.view(room).msgs); !slices.Equal(got, seqRange(1, 9)) {
			t.Fatalf("%s got seqs %v, want 1..9", p.name, got)
		}
	}
	bomber.waitSeq(t, room, 9)
	if got := seqsOf(bomber.view(room).msgs); !slices.Equal(got, []uint64{9}) {
		t.Fatalf("bomber got seqs %v, want 9", got)
	}
	histAfter := decodePayload[historyPayload](t, b.request(t, "room.history", map[string]any{"room": room})).Messages
	if len(histAfter) != 9 {
		t.Fatalf("history after the panics has %d messages, want 9", len(histAfter))
	}
	for i, m := range histBefore {
		if string(histAfter[i]) != string(m) {
			t.Fatalf("history message %d was %s before the panics and is %s after", i, m, histAfter[i])
		}
	}
	for i, m := range a.view(room).msgs {
		if string(histAfter[i]) != string(m.raw) {
			t.Fatalf("history message %d is %s, members got %s", i, histAfter[i], m.raw)
		}
	}
}

// TestPresenceAgreesWithMembers drives clients joining, leaving and
// disconnecting, several at a time, and checks after each step that every
// member's view of the room, built from room.joined and presence.diff,
// holds exactly the room's members with the meta they joined with; that a
// member is named by its authenticated identity, else its session ID, the
// same as the from of its messages; that no member gets a message from
// someone it was not told about; and that meta over MaxMetaBytes is
// refused.
func TestPresenceAgreesWithMembers(t *testing.T) {
	const room = "lobby"
	h := startServer(t, troupe.Config{
		RoomProtocol: true,
		MaxMetaBytes: 64,
		Authorize:    func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil },
	})
	metaOf := map[*peer]map[string]any{}
	var in []*peer // the members, as the test made them

	dial := func(name, identity string) *peer { return h.dialPeer(t, name, identity) }
	meta := func(p *peer, v map[string]any) map[string]any { metaOf[p] = v; return v }
	remove := func(p *peer) {
		in = slices.DeleteFunc(in, func(q *peer) bool { return q == p })
	}
	leave := func(p *peer, id string) {
		t.Helper()
		if e := p.await(t, id); e.Type != "room.left" {
			t.Fatalf("%s: leave answered %s %s", p.name, e.Type, e.Payload)
		}
		remove(p)
	}
	joined := func(p *peer, id string) joinedPayload {
		t.Helper()
		j := p.joinedAnswer(t, p.await(t, id))
		in = append(in, p)
		return j
	}

	// check waits until the server has the members the test made, has
	// every member take in a message published after that (presence is
	// flushed before every message), and compares each member's view.
	check := func(step string) {
		t.Helper()
		want := make([]string, 0, len(in))
		for _, p := range in {
			want = append(want, p.memberID())
		}
		slices.Sort(want)
		eventually(t, step+": server membership", func() bool {
			return slices.Equal(serverMemberIDs(t, h.srv, room), want)
		})
		pub := in[0]
		seq := pub.publish(t, room, map[string]string{"step": step})
		for _, p := range in {
			p.waitSeq(t, room, seq)
			v := p.view(room)
			if got := v.ids(); !slices.Equal(got, want) {
				t.Errorf("%s: %s sees members %v, want %v", step, p.name, got, want)
			}
			if last := v.msgs[len(v.msgs)-1]; last.From != pub.memberID() {
				t.Errorf("%s: %s got the step's message from %q, want %q", step, p.name, last.From, pub.memberID())
			}
			if len(v.strangers) > 0 {
				t.Errorf("%s: %s got messages from %v before being told they were members", step, p.name, v.strangers)
				v.strangers = nil
			}
			for _, m := range v.members {
				for _, q := range in {
					if q.memberID() == m.ID {
						want, _ := json.Marshal(metaOf[q])
						if !jsonEqual(m.Meta, want) {
							t.Errorf("%s: %s sees %s with meta %s, want %s", step, p.name, m.ID, m.Meta, want)
						}
					}
				}
			}
		}
		if got := serverMemberIDs(t, h.srv, room); !slices.Equal(got, want) {
			t.Fatalf("%s: server members changed to %v", step, got)
		}
		if t.Failed() {
			// The views are wrong from here on; later steps would only
			// repeat it.
			t.FailNow()
		}
	}

	ann := dial("ann", "ann@example")
	bob := dial("bob", "")
	cat := dial("cat", "cat@example")
	dan := dial("dan", "")
	eve := dial("eve", "eve@example")
	fay := dial("fay", "")

	// One joins: it is the only member, named by its identity.
	j := joined(ann, ann.post(t, "room.join", joinRequest(room, nil, meta(ann, map[string]any{"name": "Ann", "tags": []any{"a", 1.0}}))))
	if len(j.Members) != 1 || j.Members[0].ID != "ann@example" {
		t.Fatalf("ann's room.joined lists %+v", j.Members)
	}
	check("ann joined")

	// Two join at once.
	idB := bob.post(t, "room.join", joinRequest(room, nil, meta(bob, map[string]any{"name": "Bob"})))
	idC := cat.post(t, "room.join", joinRequest(room, nil, meta(cat, map[string]any{"name": "Cat"})))
	joined(bob, idB)
	joined(cat, idC)
	check("bob and cat joined")

	// One joins as another leaves.
	idD := dan.post(t, "room.join", joinRequest(room, nil, meta(dan, map[string]any{"name": "Dan"})))
	idL := bob.post(t, "room.leave", roomName{Room: room})
	joined(dan, idD)
	leave(bob, idL)
	check("dan joined, bob left")

	// One disconnects, one joins, one leaves.
	catS := h.rec.session(t, "cat")
	cat.shutdown()
	remove(cat)
	idE := eve.post(t, "room.join", joinRequest(room, nil, meta(eve, map[string]any{"name": "Eve"})))
	idL = dan.post(t, "room.leave", roomName{Room: room})
	joined(eve, idE)
	leave(dan, idL)
	h.rec.waitClose(t, catS)
	check("cat disconnected, eve joined, dan left")

	// One comes back with other meta; one joins and leaves at once.
	idB = bob.post(t, "room.join", joinRequest(room, nil, meta(bob, map[string]any{"name": "Bob", "away": false})))
	idF := fay.post(t, "room.join", joinRequest(room, nil, meta(fay, map[string]any{"name": "Fay"})))
	joined(fay, idF)
	leave(fay, fay.post(t, "room.leave", roomName{Room: room}))
	joined(bob, idB)
	check("bob rejoined, fay came and went")

	// Meta over the limit is refused and changes nothing.
	e := fay.request(t, "room.join", joinRequest(room, nil, map[string]string{"name": strings.Repeat("x", 80)}))
	expectError(t, "join with 90 bytes of meta", e, typed.CodeInvalidPayload)
	if rs := h.srv.RoomsOf(h.rec.session(t, "fay")); len(rs) != 0 {
		t.Fatalf("fay is in %v after a refused join", rs)
	}
	check("fay refused")

	// A join at a quiet moment lists exactly the members.
	j = joined(fay, fay.post(t, "room.join", joinRequest(room, nil, meta(fay, map[string]any{"name": "Fay", "n": 2}))))
	got := make([]string, 0, len(j.Members))
	for _, m := range j.Members {
		got = append(got, m.ID)
	}
	slices.Sort(got)
	if want := serverMemberIDs(t, h.srv, room); !slices.Equal(got, want) {
		t.Errorf("fay's room.joined lists %v, the room has %v", got, want)
	}
	check("fay joined")

	// A second connection of the same user is a second member of the same
	// id; when the first goes, the user is still there once.
	ann2 := dial("ann-2", "ann@example")
	joined(ann2, ann2.post(t, "room.join", joinRequest(room, nil, meta(ann2, metaOf[ann]))))
	check("ann joined twice")
	annS := h.rec.session(t, "ann")
	ann.shutdown()
	remove(ann)
	h.rec.waitClose(t, annS)
	check("ann's first connection went")
}

// TestProtocolErrors checks the protocol's refusals: each carries the
// request's id and the documented code, and none changes the room.
func TestProtocolErrors(t *testing.T) {
	const room = "open"
	h := startServer(t, troupe.Config{
		RoomProtocol: true,
		AuthorizeJoin: func(s *troupe.Session, room string) error {
			switch {
			case strings.HasPrefix(room, "vip"):
				return errors.New("members only")
			case room == "banned":
				return troupe.NewError("banned", "you are banned")
			}
			return nil
		},
	})
	a := h.dialPeer(t, "a", "")
	a.joinRoom(t, room, nil, nil)
	b := h.dialPeer(t, "b", "")
	bS := h.rec.session(t, "b")

	for _, c := range []struct {
		what, typ string
		payload   any
		code      string
	}{
		{"publish to a room not joined", "room.publish", map[string]any{"room": room, "body": "hi"}, "not_member"},
		{"publish to a room that does not exist", "room.publish", map[string]any{"room": "nowhere", "body": "hi"}, "not_member"},
		{"history of a room not joined", "room.history", map[string]any{"room": room}, "not_member"},
		{"history of a room that does not exist", "room.history", map[string]any{"room": "nowhere"}, "not_member"},
		{"leave a room not joined", "room.leave", roomName{Room: room}, "not_member"},
		{"join refused", "room.join", joinRequest("vip-lounge", nil, nil), "forbidden"},
		{"join refused with a code", "room.join", joinRequest("banned", nil, nil), "banned"},
		{"join without a room", "room.join", map[string]any{}, typed.CodeInvalidPayload},
		{"publish without a room", "room.publish", map[string]any{"body": 1}, typed.CodeInvalidPayload},
		{"publish without a body", "room.publish", map[string]any{"room": room}, typed.CodeInvalidPayload},
		{"history without a room", "room.history", map[string]any{"limit": 5}, typed.CodeInvalidPayload},
		{"leave without a room", "room.leave", map[string]any{}, typed.CodeInvalidPayload},
	} {
		id := b.post(t, c.typ, c.payload)
		e := b.await(t, id)
		if string(e.ID) != id {
			t.Errorf("%s: answer has id %s, want %s", c.what, e.ID, id)
		}
		expectError(t, c.what, e, c.code)
	}
	if rs := h.srv.RoomsOf(bS); len(rs) != 0 {
		t.Fatalf("b is in %v after refused joins", rs)
	}
	for _, r := range []string{"vip-lounge", "banned"} {
		if got := serverMemberIDs(t, h.srv, r); len(got) != 0 {
			t.Fatalf("room %q has members %v after a refused join", r, got)
		}
	}
	// A member that publishes to a room it is in but without a body is
	// refused too; a member publishing null is not.
	expectError(t, "member publishes without a body", a.request(t, "room.publish", map[string]any{"room": room}), typed.CodeInvalidPayload)

	// History pages backwards, oldest first within a page.
	for i := 1; i <= 20; i++ {
		a.publish(t, room, map[string]int{"i": i})
	}
	a.waitSeq(t, room, 20)
	if got := seqsOf(a.view(room).msgs); !slices.Equal(got, seqRange(1, 20)) {
		t.Fatalf("a got seqs %v: refused requests took sequence numbers", got)
	}
	for _, c := range []struct {
		req  map[string]any
		want []uint64
	}{
		{map[string]any{"room": room, "before": 15, "limit": 5}, seqRange(10, 14)},
		{map[string]any{"room": room, "limit": 3}, seqRange(18, 20)},
		{map[string]any{"room": room, "before": 3, "limit": 10}, seqRange(1, 2)},
		{map[string]any{"room": room, "before": 1, "limit": 10}, nil},
	} {
		e := a.request(t, "room.history", c.req)
		if e.Type != "room.history" {
			t.Fatalf("history %v answered %s %s", c.req, e.Type, e.Payload)
		}
		hp := decodePayload[historyPayload](t, e)
		var got []uint64
		for _, m := range hp.Messages {
			var rm roomMessage
			if err := json.Unmarshal(m, &rm); err != nil {
				t.Fatalf("history message %s: %v", m, err)
			}
			got = append(got, rm.Seq)
			if rm.Seq >= 1 && rm.Seq <= 20 && string(m) != string(a.view(room).msgs[rm.Seq-1].raw) {
				t.Errorf("history message %d is %s, members got %s", rm.Seq, m, a.view(room).msgs[rm.Seq-1].raw)
			}
		}
		if hp.Room != room || !slices.Equal(got, c.want) {
			t.Errorf("history %v: room %q seqs %v, want %v", c.req, hp.Room, got, c.want)
		}
	}

	// Leaving is answered room.left; the room then refuses publishes.
	e := a.request(t, "room.leave", roomName{Room: room})
	if e.Type != "room.left" || decodePayload[roomName](t, e).Room != room {
		t.Fatalf("leave answered %s %s", e.Type, e.Payload)
	}
	expectError(t, "publish after leaving", a.request(t, "room.publish", map[string]any{"room": room, "body": 1}), "not_member")
}
