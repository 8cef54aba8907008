// Package metrics holds Parley's Prometheus collectors, registered once on
// a registry the server exposes at /metrics.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is the set of collectors every role updates. A nil *Metrics is not
// allowed; tests use New(prometheus.NewRegistry()).
type Metrics struct {
	// Connections is the number of open WebSocket sessions on this gateway.
	Connections prometheus.Gauge
	// MessagesSent counts messages durably stored (send_ok'd), by kind.
	MessagesSent *prometheus.CounterVec
	// MessagesDelivered counts message frames pushed to sessions.
	MessagesDelivered prometheus.Counter
	// SendToDeliver observes seconds from a message's created_at to its push on a gateway.
	SendToDeliver prometheus.Histogram
	// Errors counts error replies by stable code (wire.Code*).
	Errors *prometheus.CounterVec
	// SlowConsumers counts sessions closed because their send queue overflowed.
	SlowConsumers prometheus.Counter
}

// New creates the collectors and registers them, plus the Go and process
// collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_gateway_connections", Help: "Open WebSocket sessions on this gateway.",
		}),
		MessagesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_messages_sent_total", Help: "Messages durably stored and acknowledged with send_ok, by kind.",
		}, []string{"kind"}),
		MessagesDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_messages_delivered_total", Help: "Message frames pushed to WebSocket sessions.",
		}),
		SendToDeliver: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "parley_send_to_deliver_seconds",
			Help:    "Seconds from a message's creation (sequencing) to its push by a gateway.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_errors_total", Help: "Error replies sent to clients, by stable error code.",
		}, []string{"code"}),
		SlowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_slow_consumer_disconnects_total", Help: "Sessions closed because their bounded send queue overflowed.",
		}),
	}
	reg.MustRegister(m.Connections, m.MessagesSent, m.MessagesDelivered, m.SendToDeliver, m.Errors, m.SlowConsumers,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
