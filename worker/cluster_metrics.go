package worker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type workerMetrics struct {
	steps     prometheus.Counter
	step      prometheus.Gauge
	rollbacks prometheus.Counter
	downloads prometheus.Counter
	phase     *prometheus.GaugeVec
}

func newWorkerMetrics(reg prometheus.Registerer) (*workerMetrics, error) {
	o := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "ncsn", Subsystem: "worker", Name: name, Help: help}
	}
	m := &workerMetrics{
		steps:     prometheus.NewCounter(prometheus.CounterOpts(o("steps_total", "Steps applied to this replica (rolled-back ones included)."))),
		step:      prometheus.NewGauge(prometheus.GaugeOpts(o("step", "The replica's step."))),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts(o("rollbacks_total", "Rollbacks of one uncommitted step on a new view."))),
		downloads: prometheus.NewCounter(prometheus.CounterOpts(o("state_downloads_total", "Downloads of the canonical state."))),
		phase:     prometheus.NewGaugeVec(prometheus.GaugeOpts(o("phase", "1 for the worker's current phase (joining, waiting, syncing, training, rejoining, done, stopped, failed), 0 for the others.")), []string{"phase"}),
	}
	for _, p := range phaseNames {
		m.phase.WithLabelValues(p)
	}
	m.phase.WithLabelValues(Joining.String()).Set(1)
	if reg != nil {
		for _, c := range []prometheus.Collector{m.steps, m.step, m.rollbacks, m.downloads, m.phase} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("worker: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *workerMetrics) setPhase(from, to Phase) {
	m.phase.WithLabelValues(from.String()).Set(0)
	m.phase.WithLabelValues(to.String()).Set(1)
}
