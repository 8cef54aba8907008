package region

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the mesh's Prometheus series; a nil *Metrics observes
// nothing.
type Metrics struct {
	link      *prometheus.GaugeVec
	published *prometheus.CounterVec
	droppedC  *prometheus.CounterVec
	relayed   *prometheus.CounterVec
	outboxIn  *prometheus.CounterVec
	forwarded *prometheus.CounterVec
	forwardS  *prometheus.HistogramVec
	depth     *prometheus.GaugeVec
	age       *prometheus.GaugeVec
	accepted  *prometheus.CounterVec
}

// NewMetrics registers the mesh's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		link: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "parley_region_link_up", Help: "1 while the last produce to the peer region's Kafka succeeded, else 0.",
		}, []string{"peer"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_region_publishes_total", Help: "Records produced to a peer region (replies and relayed deliveries), by outcome.",
		}, []string{"peer", "outcome"}),
		droppedC: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_region_dropped_total", Help: "Records for a peer region dropped because its send queue was full.",
		}, []string{"peer"}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_region_relayed_deliveries_total", Help: "Deliveries another region relayed here and this region routed (cross-region deliveries).",
		}, []string{"from"}),
		outboxIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_outbox_records_total", Help: "Requests queued in this region's outbox for their home region.",
		}, []string{"home"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_outbox_forwarded_total", Help: "Outbox records the home region's Kafka acknowledged.",
		}, []string{"home"}),
		forwardS: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "parley_forward_seconds", Help: "From the gateway's receipt of a request to the home region's acknowledgement of its forward.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"home"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "parley_outbox_depth", Help: "Outbox records read and not yet forwarded, per outbox partition.",
		}, []string{"partition"}),
		age: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "parley_outbox_oldest_seconds", Help: "Age of the oldest outbox record not yet forwarded, per outbox partition (0 when empty).",
		}, []string{"partition"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_outbox_accepted_total", Help: "Sends answered send_accepted because their home region was unreachable.",
		}, []string{"home"}),
	}
	reg.MustRegister(m.link, m.published, m.droppedC, m.relayed, m.outboxIn, m.forwarded, m.forwardS, m.depth, m.age, m.accepted)
	return m
}

func (m *Metrics) linkUp(peer string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.link.WithLabelValues(peer).Set(v)
}

func (m *Metrics) sent(peer string, ok, failed int) {
	if m == nil {
		return
	}
	m.published.WithLabelValues(peer, "ok").Add(float64(ok))
	m.published.WithLabelValues(peer, "failed").Add(float64(failed))
}

func (m *Metrics) dropped(peer string, n int) {
	if m == nil {
		return
	}
	m.droppedC.WithLabelValues(peer).Add(float64(n))
}

func (m *Metrics) relayedIn(from string, n int) {
	if m == nil {
		return
	}
	m.relayed.WithLabelValues(from).Add(float64(n))
}

func (m *Metrics) outboxed(home string, n int) {
	if m == nil {
		return
	}
	m.outboxIn.WithLabelValues(home).Add(float64(n))
}

func (m *Metrics) forwardedOne(home string, sentAtMs int64) {
	if m == nil {
		return
	}
	m.forwarded.WithLabelValues(home).Inc()
	if sentAtMs > 0 {
		m.forwardS.WithLabelValues(home).Observe(time.Since(time.UnixMilli(sentAtMs)).Seconds())
	}
}

func (m *Metrics) acceptedOne(home string) {
	if m == nil {
		return
	}
	m.accepted.WithLabelValues(home).Inc()
}

func (m *Metrics) outbox(partition int32, depth int, oldest time.Time) {
	if m == nil {
		return
	}
	p := strconv.Itoa(int(partition))
	m.depth.WithLabelValues(p).Set(float64(depth))
	age := 0.0
	if !oldest.IsZero() {
		age = time.Since(oldest).Seconds()
	}
	m.age.WithLabelValues(p).Set(age)
}
