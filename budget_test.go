package troupe_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/troupetest"
)

// gauges gathers srv's metrics: name (with labels, as name{k="v"}) to value.
func gauges(t *testing.T, srv *troupe.Server) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Metrics())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + `="` + l.GetValue() + `"}`
			}
			switch {
			case m.GetGauge() != nil:
				out[name] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[name] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// The room memory bounds of Config reach the rooms, and the metrics show
// them at work: a client that churns rooms leaves at most MaxDormantRooms
// behind, within HistoryBudget.
func TestHistoryBudgetThroughServer(t *testing.T) {
	srv, err := troupe.New(troupe.Config{RoomProtocol: true, Logger: slog.New(slog.DiscardHandler),
		HistoryBudget: 100_000, MaxDormantRooms: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := troupetest.Pipe(t, srv)
	body := strings.Repeat("x", 10_000)
	for i := range 6 {
		room := "r" + string(rune('a'+i))
		c.Request("room.join", map[string]any{"room": room}, nil)
		c.Request("room.publish", map[string]any{"room": room, "body": body}, nil)
		c.Expect("room.message", nil)
		c.Request("room.leave", map[string]any{"room": room}, nil)
	}
	deadline := time.Now().Add(5 * time.Second)
	var g map[string]float64
	for {
		g = gauges(t, srv)
		if g["troupe_rooms_dormant"] == 3 && g[`troupe_rooms_evicted_total{reason="limit"}`] == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if g["troupe_rooms_dormant"] != 3 || g[`troupe_rooms_evicted_total{reason="limit"}`] != 3 ||
		g[`troupe_rooms_evicted_total{reason="budget"}`] != 0 || g["troupe_history_budget_bytes"] != 100_000 || g["troupe_rooms_dormant_max"] != 3 ||
		g["troupe_history_retained_bytes"] < 30_000 || g["troupe_history_retained_bytes"] > 40_000 { // three rooms of a 10 KB message
		t.Fatalf("metrics: %v", g)
	}
}
