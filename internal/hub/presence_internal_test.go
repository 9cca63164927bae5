package hub

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/troupehq/troupe/internal/wire"
)

// The diffs of every suffix of a window, found in one pass from its end,
// are what each suffix's net change is, worked out on its own: for random
// windows of joins, leaves and rejoins with other meta.
func TestSuffixDiffsAreEachSuffixsNetChange(t *testing.T) {
	names := []string{"r", `a"b\c`, "\x01\x02", "é<>&\u2028"} // some escaped
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 500 {
		st := &roomState{name: names[round%len(names)]}
		present := map[string]bool{}
		var events []presenceEvent
		for range rng.IntN(40) {
			k := fmt.Sprint("m", rng.IntN(8))
			join := !present[k]
			if present[k] && rng.IntN(3) == 0 {
				join = true // meta changed on another node: leave and join again
				events = append(events, presenceEvent{key: k, entry: []byte(`{"id":"` + k + `"}`)})
			}
			present[k] = join
			events = append(events, presenceEvent{key: k, join: join, entry: fmt.Appendf(nil, `{"id":%q,"meta":%d}`, k, rng.IntN(2))})
		}
		need := make([]bool, len(events)+1)
		for i := range need {
			need[i] = true
		}
		got := st.suffixDiffs(events, need)
		for i := range need {
			if want := st.netDiff(events[i:]); !bytes.Equal(got[i], want) {
				t.Fatalf("round %d, events %+v from %d: diff %s, want %s", round, events, i, got[i], want)
			}
		}
	}
}

// netDiff is the net change of events, worked out with a map of its own.
func (st *roomState) netDiff(events []presenceEvent) []byte {
	type span struct{ first, last int }
	var order []string
	spans := map[string]*span{}
	for i, e := range events {
		if s := spans[e.key]; s != nil {
			s.last = i
		} else {
			spans[e.key] = &span{i, i}
			order = append(order, e.key)
		}
	}
	var joins, leaves [][]byte
	for _, k := range order {
		f, l := events[spans[k].first], events[spans[k].last]
		switch was, is := !f.join, l.join; {
		case !was && is:
			joins = append(joins, l.entry)
		case was && !is:
			leaves = append(leaves, l.entry)
		case was && is && !bytes.Equal(f.entry, l.entry):
			leaves = append(leaves, f.entry)
			joins = append(joins, l.entry)
		}
	}
	return st.diffEnvelope(joins, leaves)
}

// diffEnvelope encodes a presence.diff of the given entries, or returns
// nil if there are none: the reference's own encoder.
func (st *roomState) diffEnvelope(joins, leaves [][]byte) []byte {
	if len(joins)+len(leaves) == 0 {
		return nil
	}
	p := append(make([]byte, 0, 64), `{"room":`...)
	p = wire.AppendString(p, st.name)
	p = append(p, `,"joins":`...)
	p = appendList(p, joins)
	p = append(p, `,"leaves":`...)
	p = appendList(p, leaves)
	p = append(p, '}')
	return wire.Envelope(nil, "presence.diff", nil, p)
}

// BenchmarkSuffixDiffs measures the diffs of one window of a join storm:
// 64 members join, each needs the joins after its own (and the members
// from before the window all of them), 2,080 entries in 65 frames.
func BenchmarkSuffixDiffs(b *testing.B) {
	st := &roomState{name: "conns-42"}
	events := make([]presenceEvent, 64)
	for i := range events {
		id := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
		events[i] = presenceEvent{key: id, join: true, entry: appendEntry(nil, id, nil)}
	}
	need := make([]bool, len(events)+1)
	for i := range need {
		need[i] = true
	}
	b.ReportAllocs()
	for b.Loop() {
		st.suffixDiffs(events, need)
	}
}
