package nats_test

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// TestMeasureThreeNodes logs, over three nodes on one NATS cluster, what a
// join costs (a member joins on one node, then another on the next node:
// the second join's round trip) and what publish-to-history costs (publish
// with id on one node, await room.published, then room.history on the same
// node until it holds the message). Set TROUPE_MEASURE=1 to run it:
//
//	TROUPE_MEASURE=1 go test -run TestMeasureThreeNodes -v .
func TestMeasureThreeNodes(t *testing.T) {
	if os.Getenv("TROUPE_MEASURE") == "" {
		t.Skip("a measurement: set TROUPE_MEASURE=1")
	}
	const runs = 100
	urls := startNodes(t)
	var joins, p2h []time.Duration
	short := 0
	for run := range runs {
		room := fmt.Sprintf("m-%d", run)
		a := dialClient(t, urls[run%3], fmt.Sprintf("m%d-a", run))
		a.join(t, room, nil, "")
		b := dialClient(t, urls[(run+1)%3], fmt.Sprintf("m%d-b", run))
		start := time.Now()
		b.join(t, room, nil, "")
		joins = append(joins, time.Since(start))

		start = time.Now()
		a.send(t, "room.publish", "pub", map[string]any{"room": room, "body": run})
		a.answer(t, "pub")
		a.send(t, "room.history", "hist", map[string]any{"room": room, "limit": 10})
		e := a.answer(t, "hist")
		p2h = append(p2h, time.Since(start))
		var h struct {
			Messages []json.RawMessage `json:"messages"`
		}
		_ = json.Unmarshal(e.Payload, &h)
		if len(h.Messages) == 0 {
			short++
		}
		a.close()
		b.close()
	}
	t.Logf("join on a second node: %s", stats(joins))
	t.Logf("publish, ack, history on the publisher's node: %s; histories without the message: %d of %d", stats(p2h), short, runs)
}

func stats(d []time.Duration) string {
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))].Round(10 * time.Microsecond) }
	return fmt.Sprintf("p50 %v p90 %v p99 %v max %v (n=%d)", q(0.5), q(0.9), q(0.99), d[len(d)-1].Round(10*time.Microsecond), len(d))
}
