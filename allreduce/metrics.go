package allreduce

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type metrics struct {
	seconds  *prometheus.HistogramVec
	sent     *prometheus.CounterVec
	received *prometheus.CounterVec
	failed   *prometheus.CounterVec
	refused  *prometheus.CounterVec
	opened   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ncsn", Subsystem: "allreduce", Name: "seconds",
			Help:    "Duration of successful all-reduce operations.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"codec"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ncsn", Subsystem: "allreduce", Name: "wire_sent_bytes_total",
			Help: "Bytes of ring messages sent.",
		}, []string{"codec"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ncsn", Subsystem: "allreduce", Name: "wire_received_bytes_total",
			Help: "Bytes of ring messages received.",
		}, []string{"codec"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ncsn", Subsystem: "allreduce", Name: "failed_total",
			Help: "Failed all-reduce operations by reason: peer, aborted, closed, canceled, other.",
		}, []string{"codec", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ncsn", Subsystem: "allreduce", Name: "refused_pieces_total",
			Help: "Pieces refused to a left neighbour, by reason.",
		}, []string{"reason"}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ncsn", Subsystem: "allreduce", Name: "streams_opened_total",
			Help: "Streams opened to right-hand neighbours over gRPC, by socket: tcp, or unix for a neighbour on this host.",
		}, []string{"socket"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.seconds, m.sent, m.received, m.failed, m.refused, m.opened} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("allreduce: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(c Codec, res Result, err error) {
	name := c.String()
	m.sent.WithLabelValues(name).Add(float64(res.WireBytesSent))
	m.received.WithLabelValues(name).Add(float64(res.WireBytesReceived))
	if err == nil {
		m.seconds.WithLabelValues(name).Observe(res.Duration.Seconds())
		return
	}
	var pe *PeerError
	reason := "other"
	switch {
	case errors.Is(err, ErrAborted):
		reason = "aborted"
	case errors.Is(err, ErrClosed):
		reason = "closed"
	case errors.As(err, &pe):
		reason = "peer"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		reason = "canceled"
	}
	m.failed.WithLabelValues(name, reason).Inc()
}

// socket names the socket kind of the streams opened so far: tcp, unix, both ("tcp+unix"),
// or "" for none.
func (m *metrics) socket() string {
	var kinds []string
	for _, k := range []string{"tcp", "unix"} {
		var d dto.Metric
		if m.opened.WithLabelValues(k).Write(&d) == nil && d.GetCounter().GetValue() > 0 {
			kinds = append(kinds, k)
		}
	}
	return strings.Join(kinds, "+")
}
