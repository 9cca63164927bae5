package troupe

import (
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/troupehq/troupe/internal/serve"
	"github.com/troupehq/troupe/internal/session"
)

// Metrics returns the server's Prometheus collector. Troupe keeps it up to
// date itself; register it where your metrics are served:
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(srv.Metrics())
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Counters are read from atomics at scrape time, so the message paths pay
// one atomic add per message (or per batch) and nothing per scrape.
func (srv *Server) Metrics() prometheus.Collector { return srv.metrics }

// roomSizeBuckets are the buckets of troupe_room_members.
var roomSizeBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000}

type metrics struct {
	srv *Server

	errors  *prometheus.CounterVec   // error envelopes sent, by code
	latency *prometheus.HistogramVec // handler time, by registered type
	// observers caches latency's child of each type: WithLabelValues
	// hashes the label and takes the vector's lock, on every message.
	// Copied on write; the types are the registered ones, a few.
	observers atomic.Pointer[map[string]prometheus.Observer]
	obsMu     sync.Mutex

	connsActive, connsTotal, refused            *prometheus.Desc
	msgsIn, bytesIn, msgsOut, bytesOut, rateLtd *prometheus.Desc
	unsent                                      *prometheus.Desc
	closes, slow, resyncs, roomsActive          *prometheus.Desc
	roomMembers                                 *prometheus.Desc
	queued, queueMax                            *prometheus.Desc
	histBytes, histBudget, dormant, dormantMax  *prometheus.Desc
	evicted, trims, trimmed                     *prometheus.Desc
	duplicates, midsEvicted                     *prometheus.Desc
}

func newMetrics(srv *Server) *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("troupe_"+name, help, labels, nil)
	}
	return &metrics{
		srv: srv,
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_errors_total", Help: "Error envelopes sent to clients, by code.",
		}, []string{"code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "troupe_handler_duration_seconds",
			Help:    "Time spent in typed handlers, by message type (unregistered types count as \"unknown\").",
			Buckets: []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05, .1, .5, 1},
		}, []string{"type"}),
		connsActive: d("connections_active", "Open connections, by transport (websocket; sse: the HTTP fallback; or what ServeConn's caller named).", "transport"),
		connsTotal:  d("connections_total", "Connections accepted, by transport.", "transport"),
		refused:     d("connections_refused_total", "Upgrades refused, by HTTP status.", "status"),
		msgsIn:      d("messages_received_total", "Messages received from clients."),
		bytesIn:     d("received_bytes_total", "Payload bytes received from clients."),
		msgsOut:     d("messages_sent_total", "Messages written to clients."),
		bytesOut:    d("sent_bytes_total", "Payload bytes written to clients."),
		rateLtd:     d("rate_limited_total", "Messages refused by the per-session rate limit."),
		unsent:      d("unsent_at_close_total", "Messages accepted for a client and never written: dropped by a discarding close, lost in a failed write, or still queued when the connection ended."),
		closes:      d("closes_total", "Sessions closed, by close code.", "code"),
		slow:        d("slow_consumers_total", "Sessions closed with 1013 because their outbound queue overflowed, or stayed behind longer than MaxLag."),
		resyncs:     d("resyncs_total", "room.resync frames sent: a member's room traffic overflowed its queue and was dropped, to be read again from the history."),
		roomsActive: d("rooms_active", "Rooms with members."),
		roomMembers: d("room_members", "Members per room, over the rooms that exist at scrape time."),
		queued:      d("outbound_queued_messages", "Messages accepted for clients and not yet written, all sessions."),
		queueMax:    d("outbound_queue_max", "The longest outbound queue of any session."),
		histBytes:   d("history_retained_bytes", "Bytes the room histories hold, live and dormant rooms (what Config.HistoryBudget bounds)."),
		histBudget:  d("history_budget_bytes", "Config.HistoryBudget in force (0: no limit)."),
		dormant:     d("rooms_dormant", "Empty rooms kept for resume (HistoryRetention)."),
		dormantMax:  d("rooms_dormant_max", "Config.MaxDormantRooms in force (0: no limit)."),
		evicted:     d("rooms_evicted_total", "Dormant rooms forgotten before their retention ended, by reason (budget: HistoryBudget; limit: MaxDormantRooms).", "reason"),
		trims:       d("history_trims_total", "Live room histories trimmed to stay within HistoryBudget."),
		trimmed:     d("history_trimmed_bytes_total", "Bytes those trims freed."),
		duplicates:  d("publish_duplicates_total", "room.publish messages not published because their mid was (answered with the first one's seq)."),
		midsEvicted: d("message_ids_evicted_total", "Message ids the rooms forgot, by reason (count: DedupeMessages; age: DedupeWindow; budget: HistoryBudget).", "reason"),
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.errors.Describe(ch)
	m.latency.Describe(ch)
	for _, d := range []*prometheus.Desc{m.connsActive, m.connsTotal, m.refused, m.msgsIn, m.bytesIn,
		m.msgsOut, m.bytesOut, m.rateLtd, m.unsent, m.closes, m.slow, m.resyncs, m.roomsActive, m.roomMembers, m.queued, m.queueMax,
		m.histBytes, m.histBudget, m.dormant, m.dormantMax, m.evicted, m.trims, m.trimmed, m.duplicates, m.midsEvicted} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.errors.Collect(ch)
	m.latency.Collect(ch)
	st := m.srv.http.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	active := m.srv.http.ActiveByTransport()
	if _, ok := active[serve.TransportSSE]; !ok {
		active[serve.TransportSSE] = 0
	}
	for t, n := range active {
		ch <- prometheus.MustNewConstMetric(m.connsActive, prometheus.GaugeValue, float64(n), t)
	}
	opened := st.OpenedByTransport()
	for _, t := range []string{serve.TransportWebSocket, serve.TransportSSE} {
		if _, ok := opened[t]; !ok {
			opened[t] = 0 // both series in every scrape, from the start
		}
	}
	for t, n := range opened {
		counter(m.connsTotal, n, t)
	}
	sessions := m.srv.Sessions()
	for status, n := range st.Refused() {
		counter(m.refused, n, strconv.Itoa(status))
	}
	counter(m.msgsIn, st.MessagesIn.Load())
	counter(m.bytesIn, st.BytesIn.Load())
	frames, bytes := m.srv.sys.Sent()
	counter(m.msgsOut, frames)
	counter(m.bytesOut, bytes)
	counter(m.rateLtd, st.RateLimited.Load())
	counter(m.unsent, st.UnsentAtClose.Load())
	for code, n := range st.Closes() {
		counter(m.closes, n, strconv.Itoa(code))
	}
	counter(m.slow, m.srv.sys.Overflows())
	counter(m.resyncs, m.srv.sys.Resyncs())

	sizes := m.srv.rooms.Sizes()
	gauge(m.roomsActive, float64(len(sizes)))
	buckets := make(map[float64]uint64, len(roomSizeBuckets))
	for _, b := range roomSizeBuckets {
		buckets[b] = 0 // every bucket in every scrape, empty ones too
	}
	var sum float64
	for _, n := range sizes {
		sum += float64(n)
		for _, b := range roomSizeBuckets {
			if float64(n) <= b {
				buckets[b]++
			}
		}
	}
	ch <- prometheus.MustNewConstHistogram(m.roomMembers, uint64(len(sizes)), sum, buckets)

	total, longest := 0, 0
	for _, s := range sessions {
		n := session.QueueLen(s)
		total += n
		longest = max(longest, n)
	}
	gauge(m.queued, float64(total))
	gauge(m.queueMax, float64(longest))

	rs := m.srv.rooms.Stats()
	gauge(m.histBytes, float64(rs.HistoryBytes))
	gauge(m.histBudget, float64(rs.HistoryBudget))
	gauge(m.dormant, float64(rs.Dormant))
	gauge(m.dormantMax, float64(rs.MaxDormant))
	counter(m.evicted, rs.EvictedBudget, "budget")
	counter(m.evicted, rs.EvictedLimit, "limit")
	counter(m.trims, rs.Trims)
	counter(m.trimmed, rs.TrimmedBytes)
	counter(m.duplicates, rs.Duplicates)
	counter(m.midsEvicted, rs.MidsEvictedFull, "count")
	counter(m.midsEvicted, rs.MidsEvictedAge, "age")
	counter(m.midsEvicted, rs.MidsEvictedBudget, "budget")
}

// observe records one handled message: its handler time and, if it was
// answered with an error envelope, the error's code.
func (m *metrics) observe(typ string, known bool, start time.Time, errCode string) {
	if !known {
		typ = "unknown"
	}
	m.observer(typ).Observe(time.Since(start).Seconds())
	if errCode != "" {
		m.errors.WithLabelValues(errCode).Inc()
	}
}

// maxObservers bounds the cache: past it, a type is looked up each time.
const maxObservers = 256

// observer returns the latency histogram of typ.
func (m *metrics) observer(typ string) prometheus.Observer {
	cache := m.observers.Load()
	if cache != nil {
		if o, ok := (*cache)[typ]; ok {
			return o
		}
	}
	o := m.latency.WithLabelValues(typ)
	if cache != nil && len(*cache) >= maxObservers {
		return o // full for good: no lock to find that out
	}
	m.obsMu.Lock()
	defer m.obsMu.Unlock()
	var next map[string]prometheus.Observer
	if cache := m.observers.Load(); cache != nil {
		if len(*cache) >= maxObservers {
			return o
		}
		next = maps.Clone(*cache)
	} else {
		next = make(map[string]prometheus.Observer)
	}
	next[typ] = o
	m.observers.Store(&next)
	return o
}
