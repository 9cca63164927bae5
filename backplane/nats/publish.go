package nats

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	roomPrefix     = "troupe.room."
	presencePrefix = "troupe.presence."
	syncPrefix     = "troupe.presence-sync."

	// seqHeader carries the room's sequence number of a stored message,
	// which differs from its stream sequence (the stream holds every room).
	seqHeader = "Troupe-Seq"
	// countHeader, on a stored message that holds several room messages,
	// says how many (see encodeBatch).
	countHeader = "Troupe-Count"

	// attemptTimeout bounds one publish request, so that an attempt lost in
	// a leader election is retried (under the same message ID) well before
	// the caller's deadline.
	attemptTimeout = 2 * time.Second
)

// roomToken encodes a room name as one subject token: base64 leaves only
// letters, digits, '-' and '_', so no name can add a token or a wildcard.
// The empty name becomes "_", which base64 never produces alone.
func roomToken(room string) string {
	if room == "" {
		return "_"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(room))
}

func roomSubject(room string) string { return roomPrefix + roomToken(room) }

// roomState is what this node knows of a room's log, shared by its
// publishers and its feed, and the turn that serialises its publishers.
type roomState struct {
	turn chan struct{} // capacity 1: held by the publisher in progress
	refs int           // publishers and feeds using it; guarded by Backplane.mu

	mu        sync.Mutex // guards the fields below
	known     bool
	streamSeq uint64 // stream sequence of the room's last message
	roomSeq   uint64 // its room sequence
}

func (st *roomState) get() (streamSeq, roomSeq uint64, known bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.streamSeq, st.roomSeq, st.known
}

// note records a message of the room, unless a later one is already known,
// so that the feed keeps the publishers' view current and most publishes
// need no refresh even when other nodes publish too.
func (st *roomState) note(streamSeq, roomSeq uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.known || streamSeq > st.streamSeq {
		st.streamSeq, st.roomSeq, st.known = streamSeq, roomSeq, true
	}
}

func (st *roomState) set(streamSeq, roomSeq uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.streamSeq, st.roomSeq, st.known = streamSeq, roomSeq, true
}

func (b *Backplane) acquire(room string) *roomState {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.roomsMu[room]
	if st == nil {
		st = &roomState{turn: make(chan struct{}, 1)}
		b.roomsMu[room] = st
	}
	st.refs++
	return st
}

// release forgets the room once nobody publishes to or follows it, so that
// the map does not grow with every room ever used.
func (b *Backplane) release(room string, st *roomState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st.refs--
	if st.refs == 0 && b.roomsMu[room] == st {
		delete(b.roomsMu, room)
	}
}

// Publish appends build(seq) to room's log, seq being the room's last
// sequence number plus one, and returns seq.
//
// Publishes of one room take turns inside this node; between nodes the
// stream arbitrates: each message is sent with the stream sequence of the
// room's last message as Nats-Expected-Last-Subject-Sequence, and when
// another node published first the stream refuses it ("wrong last
// sequence"), Publish learns the new last message, calls build again with
// the next number and tries again. A request lost to a timeout is resent
// as is, with the same Nats-Msg-Id, so that the stream stores it once.
// When JetStream cannot take the message before ctx ends (or the default
// Timeout, without a deadline), the error wraps rooms.ErrUnavailable.
func (b *Backplane) Publish(ctx context.Context, room string, count int, build func(first uint64) [][]byte) (uint64, error) {
	if count < 1 {
		return 0, fmt.Errorf("nats: publish of %d messages", count)
	}
	if b.closed.Load() {
		return 0, b.errClosed()
	}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	st := b.acquire(room)
	defer b.release(room, st)
	select {
	case st.turn <- struct{}{}:
		defer func() { <-st.turn }()
	case <-ctx.Done():
		return 0, unavailable(ctx.Err())
	}

	subj := roomSubject(room)
	streamSeq, roomSeq, known := st.get()
	if !known {
		var err error
		if streamSeq, roomSeq, err = b.lastOf(ctx, subj); err != nil {
			return 0, err
		}
		st.note(streamSeq, roomSeq)
	}
	checkedStream := false
	for {
		seq := roomSeq + 1
		payloads := build(seq)
		if len(payloads) != count {
			return 0, fmt.Errorf("nats: build returned %d messages, want %d", len(payloads), count)
		}
		msg := &natsgo.Msg{Subject: subj, Data: encodeBatch(payloads), Header: natsgo.Header{}}
		id := b.cfg.Node + "-" + b.incarnation + "-" + strconv.FormatUint(b.msgCounter.Add(1), 10)
		msg.Header.Set(jetstream.MsgIDHeader, id)
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(streamSeq, 10))
		msg.Header.Set(seqHeader, strconv.FormatUint(seq, 10))
		if count > 1 {
			msg.Header.Set(countHeader, strconv.Itoa(count))
		}
		last := seq + uint64(count) - 1

		ack, err := b.send(ctx, msg, &checkedStream)
		if err == nil {
			// A duplicate ack names the sequence under which the first,
			// unacknowledged copy was stored: the message is in, once.
			st.set(ack.Sequence, last)
			return seq, nil
		}
		var wrong *wrongLast
		if !errors.As(err, &wrong) {
			return 0, err
		}
		if wrong.uncertain {
			// An earlier copy may have been stored before the refusal
			// (a single server checks the expected sequence before the
			// message ID). If so it is the first message after streamSeq.
			if ss, ok := b.storedAs(ctx, subj, streamSeq, id); ok {
				st.set(ss, last)
				return seq, nil
			}
		}
		// Someone else published first. The feed may already have seen it;
		// otherwise ask the stream.
		if ss, rs, _ := st.get(); ss > streamSeq {
			streamSeq, roomSeq = ss, rs
			continue
		}
		if streamSeq, roomSeq, err = b.lastOf(ctx, subj); err != nil {
			return 0, err
		}
		st.note(streamSeq, roomSeq)
	}
}

// wrongLast is the stream's refusal of a message whose expected last
// subject sequence is out of date. uncertain says an earlier copy of the
// same message may have been stored (a previous attempt timed out).
type wrongLast struct {
	uncertain bool
	err       error
}

func (w *wrongLast) Error() string { return w.err.Error() }

// send publishes msg until the stream answers, resending it unchanged while
// JetStream is unreachable, within ctx.
func (b *Backplane) send(ctx context.Context, msg *natsgo.Msg, checkedStream *bool) (*jetstream.PubAck, error) {
	uncertain := false
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		ack, err := b.publishMsg(actx, msg)
		cancel()
		if err == nil {
			return ack, nil
		}
		if isWrongLastSeq(err) {
			return nil, &wrongLast{uncertain: uncertain, err: err}
		}
		if errors.Is(err, natsgo.ErrConnectionClosed) || errors.Is(err, natsgo.ErrConnectionDraining) {
			return nil, b.errClosed()
		}
		if !retryable(err) {
			return nil, fmt.Errorf("nats: publish: %w", err)
		}
		if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, natsgo.ErrNoResponders) {
			uncertain = true
		} else if !*checkedStream {
			// Nothing listens on the subject: a leader election, or the
			// stream was deleted. Recreate it in the latter case.
			*checkedStream = true
			b.recreateStream(ctx)
		}
		select {
		case <-ctx.Done():
			return nil, unavailable(fmt.Errorf("%w (last error: %v)", ctx.Err(), err))
		case <-time.After(backoff(attempt)):
		}
	}
}

// publishMsg sends one publish request; the retries are send's, so that
// every resend goes through the same bookkeeping.
func (b *Backplane) publishMsg(ctx context.Context, msg *natsgo.Msg) (*jetstream.PubAck, error) {
	if b.testPublish != nil {
		return b.testPublish(ctx, msg)
	}
	return b.js.PublishMsg(ctx, msg, jetstream.WithRetryAttempts(0))
}

func (b *Backplane) recreateStream(ctx context.Context) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	if _, err := b.js.Stream(actx, b.cfg.Stream); errors.Is(err, jetstream.ErrStreamNotFound) {
		b.log.Warn("stream is gone, creating it again", "stream", b.cfg.Stream)
		if err := b.ensureStream(actx); err != nil {
			b.log.Warn("recreate stream", "err", err)
		}
	}
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// lastOf returns the stream and room sequence of subj's last message, or
// zeros when it has none, retrying while JetStream is unreachable.
func (b *Backplane) lastOf(ctx context.Context, subj string) (streamSeq, roomSeq uint64, err error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		m, err := b.stream.GetLastMsgForSubject(actx, subj)
		cancel()
		switch {
		case err == nil:
			first, n, err := batchHeaders(m.Header)
			if err != nil {
				return 0, 0, fmt.Errorf("nats: message %d on %s: %w", m.Sequence, subj, err)
			}
			return m.Sequence, first + uint64(n) - 1, nil
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return 0, 0, nil
		case errors.Is(err, natsgo.ErrConnectionClosed), errors.Is(err, natsgo.ErrConnectionDraining):
			return 0, 0, b.errClosed()
		case !retryable(err):
			return 0, 0, fmt.Errorf("nats: last message of %s: %w", subj, err)
		}
		select {
		case <-ctx.Done():
			return 0, 0, unavailable(fmt.Errorf("%w (last error: %v)", ctx.Err(), err))
		case <-time.After(backoff(attempt)):
		}
	}
}

// storedAs tells whether the message with ID id was stored right after
// stream sequence after on subj, and under which stream sequence.
func (b *Backplane) storedAs(ctx context.Context, subj string, after uint64, id string) (uint64, bool) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	m, err := b.stream.GetMsg(actx, after+1, jetstream.WithGetMsgSubject(subj))
	if err != nil || m.Header.Get(jetstream.MsgIDHeader) != id {
		return 0, false
	}
	return m.Sequence, true
}

// encodeBatch is the data of a stored message: one room message as is, or
// several, each preceded by its length (uvarint), so that a batch of a busy
// room costs one append and one round trip.
func encodeBatch(payloads [][]byte) []byte {
	if len(payloads) == 1 {
		return payloads[0]
	}
	size := 0
	for _, p := range payloads {
		size += binary.MaxVarintLen32 + len(p)
	}
	out := make([]byte, 0, size)
	for _, p := range payloads {
		out = binary.AppendUvarint(out, uint64(len(p)))
		out = append(out, p...)
	}
	return out
}

// decodeBatch splits what encodeBatch made of n messages.
func decodeBatch(data []byte, n int) ([][]byte, error) {
	if n == 1 {
		return [][]byte{data}, nil
	}
	out := make([][]byte, 0, n)
	for len(data) > 0 {
		l, k := binary.Uvarint(data)
		if k <= 0 || l > uint64(len(data)-k) {
			return nil, errors.New("nats: malformed batch")
		}
		out = append(out, data[k:k+int(l)])
		data = data[k+int(l):]
	}
	if len(out) != n {
		return nil, fmt.Errorf("nats: batch of %d messages, header says %d", len(out), n)
	}
	return out, nil
}

// batchHeaders reads the room sequence of a stored message's first room
// message and how many it holds.
func batchHeaders(h natsgo.Header) (first uint64, n int, err error) {
	first, err = strconv.ParseUint(h.Get(seqHeader), 10, 64)
	if err != nil || first == 0 {
		return 0, 0, fmt.Errorf("no valid %s header", seqHeader)
	}
	n = 1
	if c := h.Get(countHeader); c != "" {
		if n, err = strconv.Atoi(c); err != nil || n < 1 {
			return 0, 0, fmt.Errorf("no valid %s header", countHeader)
		}
	}
	return first, n, nil
}
