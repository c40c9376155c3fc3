package worker

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// localMetrics are a single-process run's: what the coordinator exports of a
// distributed one, under the subsystem "train".
type localMetrics struct {
	steps         prometheus.Counter
	step, loss    prometheus.Gauge
	lossLevel     *prometheus.GaugeVec
	samplesPerSec prometheus.Gauge
}

func newLocalMetrics(reg prometheus.Registerer) (*localMetrics, error) {
	o := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "ncsn", Subsystem: "train", Name: name, Help: help}
	}
	m := &localMetrics{
		steps:         prometheus.NewCounter(prometheus.CounterOpts(o("steps_total", "Steps applied by this process."))),
		step:          prometheus.NewGauge(prometheus.GaugeOpts(o("step", "The run's step."))),
		loss:          prometheus.NewGauge(prometheus.GaugeOpts(o("loss", "The last step's loss."))),
		lossLevel:     prometheus.NewGaugeVec(prometheus.GaugeOpts(o("loss_per_level", "The last step's mean loss at each σ level.")), []string{"level"}),
		samplesPerSec: prometheus.NewGauge(prometheus.GaugeOpts(o("samples_per_second", "Training samples per second since the process started."))),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.steps, m.step, m.loss, m.lossLevel, m.samplesPerSec} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("worker: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *localMetrics) observe(s StepInfo) {
	m.steps.Inc()
	m.step.Set(float64(s.Step))
	m.loss.Set(s.Loss)
	for i, l := range s.PerLevel {
		m.lossLevel.WithLabelValues(strconv.Itoa(i)).Set(l)
	}
	m.samplesPerSec.Set(s.SamplesPerSec)
}
