package nats_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/troupehq/troupe/backplane/nats"
)

// BenchmarkCrossNodeBytes measures what one room message costs between the
// servers of a three-node cluster (replication of the log included), with
// 1 and with 300 members on each node: interest-based fan-out means the
// figure must not grow with the members. Each iteration publishes one
// 128-byte body through node 0 and waits until every member has it.
//
//	go test -run XXX -bench CrossNodeBytes -benchtime 200x ./backplane/nats/
func BenchmarkCrossNodeBytes(b *testing.B) {
	for _, perNode := range []int{1, 300} {
		b.Run(fmt.Sprintf("members-per-node=%d", perNode), func(b *testing.B) {
			benchCrossNode(b, perNode)
		})
	}
}

func benchCrossNode(b *testing.B, perNode int) {
	// Presence repeats would add a little traffic of their own.
	urls, bps := startNodesWith(b, func(o *nats.Options) { o.PresenceInterval = time.Hour })
	const room = "bytes"
	var members []*wsClient
	for i, u := range urls {
		for j := range perNode {
			c := dialClient(b, u, fmt.Sprintf("m%d-%d", i, j))
			c.join(b, room, nil, "")
			members = append(members, c)
		}
	}
	pub := members[0]
	body := fmt.Sprintf("%0128d", 0)
	routeBytes := func() int64 {
		var n int64
		for _, bp := range bps {
			rz, err := bp.Server().Routez(nil)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range rz.Routes {
				n += r.OutBytes
			}
		}
		return n
	}
	// One message first, so that every node follows the room.
	publishAndWait(b, pub, members, room, body, 1)
	before := routeBytes()
	b.ResetTimer()
	for i := range b.N {
		publishAndWait(b, pub, members, room, body, uint64(i+2))
	}
	b.StopTimer()
	b.ReportMetric(float64(routeBytes()-before)/float64(b.N), "route-B/msg")
	b.ReportMetric(float64(len(members)), "members")
}

func publishAndWait(b *testing.B, pub *wsClient, members []*wsClient, room, body string, seq uint64) {
	id := fmt.Sprintf("pub-%d", seq)
	pub.send(b, "room.publish", id, map[string]any{"room": room, "body": body})
	e := pub.answer(b, id)
	var ack struct {
		Seq uint64 `json:"seq"`
	}
	_ = json.Unmarshal(e.Payload, &ack)
	if ack.Seq != seq {
		b.Fatalf("publish answered %s %s, want seq %d", e.Type, e.Payload, seq)
	}
	for _, m := range members {
		m.wait(b, fmt.Sprintf("seq %d", seq), func() bool { return len(m.msgs) > 0 && m.msgs[len(m.msgs)-1].Seq >= seq })
	}
}
