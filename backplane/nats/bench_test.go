package nats

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkPublish measures one room's publish round trip (ns/op is the
// latency of a Publish, as a room's publishes take turns) and the
// throughput of many rooms published to at once, 200-byte messages.
func BenchmarkPublish(b *testing.B) {
	body := make([]byte, 200)
	build := func(uint64) []byte { return body }
	run := func(b *testing.B, nodes []*Backplane) {
		b.Run("one-room", func(b *testing.B) {
			for b.Loop() {
				if _, err := nodes[0].Publish(ctxT(b), "bench-one", 1, single(build)); err != nil {
					b.Fatal(err)
				}
			}
		})
		if len(nodes) > 1 {
			// Every publish through another node than the last one's:
			// each finds its view stale and refreshes it once.
			b.Run("one-room-rotating-nodes", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					if _, err := nodes[i%len(nodes)].Publish(ctxT(b), "bench-rotate", 1, single(build)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run("many-rooms-parallel", func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				g := next.Add(1)
				n := nodes[int(g)%len(nodes)]
				room := fmt.Sprintf("bench-room-%d", g)
				for pb.Next() {
					if _, err := n.Publish(ctxT(b), room, 1, single(build)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("solo-memory", func(b *testing.B) {
		run(b, []*Backplane{openSolo(b, func(o *Options) { o.Logger = testLogger() })})
	})
	b.Run("solo-file", func(b *testing.B) {
		run(b, []*Backplane{openSolo(b, func(o *Options) { o.Memory = false })})
	})
	b.Run("cluster-R3-file", func(b *testing.B) {
		run(b, openCluster(b))
	})
}
