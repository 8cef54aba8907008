// Package metrics holds Parley's Prometheus collectors, registered once on
// a registry the server exposes at /metrics.
package metrics

import (
	"time"

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
	// Stage observes the seconds one step of the data path took, by stage
	// (the Stage* constants), so the distributed mode's latency can be taken
	// apart in production (issue 11).
	Stage *prometheus.HistogramVec
	// KafkaRequests counts requests this process sent to Kafka brokers, by
	// API ("Produce", "Fetch", "OffsetCommit", ...).
	KafkaRequests *prometheus.CounterVec
	// CassandraStatements counts statements this process executed on
	// Cassandra, by kind: "conditional_batch", "batch", or the statement's
	// verb and table ("insert receipts", "select messages", ...).
	CassandraStatements *prometheus.CounterVec

	stages map[string]prometheus.Observer // Stage's children, resolved once
}

// ObserveStage records that stage took d. A nil m records nothing (unit
// tests build components without metrics); an unknown stage is ignored.
func (m *Metrics) ObserveStage(stage string, d time.Duration) {
	if m == nil {
		return
	}
	if o := m.stages[stage]; o != nil {
		o.Observe(max(d.Seconds(), 0))
	}
}

// ObserveSince records the time from t to now for stage; a zero t (a record
// without a timestamp) records nothing.
func (m *Metrics) ObserveSince(stage string, t time.Time) {
	if !t.IsZero() {
		m.ObserveStage(stage, time.Since(t))
	}
}

// Stages of the data path (labels of Metrics.Stage). A send in the
// distributed mode passes them in this order; in embedded mode the bus is
// in process and the store Pebble, so the same stages are simply short.
const (
	// StageIngressPublish: gateway, publishing a request to the ingress
	// topic until the broker acknowledged it (acks=all).
	StageIngressPublish = "ingress_publish"
	// StageIngressConsume: chat role, from the request's publication (the
	// record's timestamp) to its arrival at the sequencer.
	StageIngressConsume = "ingress_consume"
	// StageAppend: chat role, one conditional append of a batch of messages
	// (Cassandra: one Paxos round per conditional batch).
	StageAppend = "append"
	// StageDeliverPublish: chat role, publishing a batch's replies and
	// deliveries to the deliver topic until acknowledged.
	StageDeliverPublish = "deliver_publish"
	// StageDeliverConsume: gateway, from a deliver record's publication to
	// its arrival at the gateway.
	StageDeliverConsume = "deliver_consume"
	// StageSocketWrite: gateway, one write of a session's queued frames to
	// its socket.
	StageSocketWrite = "socket_write"
)

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
		Stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "parley_stage_seconds",
			Help:    "Seconds one stage of the data path took, by stage (ingress_publish, ingress_consume, append, deliver_publish, deliver_consume, socket_write).",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"stage"}),
		KafkaRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_kafka_requests_total", Help: "Requests sent to Kafka brokers, by API.",
		}, []string{"api"}),
		CassandraStatements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_cassandra_statements_total", Help: "Statements executed on Cassandra, by kind (verb and table, batch, conditional_batch).",
		}, []string{"kind"}),
	}
	m.stages = make(map[string]prometheus.Observer)
	for _, st := range []string{StageIngressPublish, StageIngressConsume, StageAppend, StageDeliverPublish, StageDeliverConsume, StageSocketWrite} {
		m.stages[st] = m.Stage.WithLabelValues(st)
	}
	reg.MustRegister(m.Connections, m.MessagesSent, m.MessagesDelivered, m.SendToDeliver, m.Errors, m.SlowConsumers,
		m.Stage, m.KafkaRequests, m.CassandraStatements,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
