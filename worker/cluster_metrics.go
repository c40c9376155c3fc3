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
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.steps, m.step, m.rollbacks, m.downloads} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("worker: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
