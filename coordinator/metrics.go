package coordinator

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type metrics struct {
	steps          prometheus.Counter
	step           prometheus.Gauge
	loss           prometheus.Gauge
	lossLevel      *prometheus.GaugeVec
	samplesPerSec  prometheus.Gauge
	epoch          prometheus.Gauge
	members        prometheus.Gauge
	stateDownloads prometheus.Counter
	hashMismatches prometheus.Counter
	commitBytes    prometheus.Counter
	ckptSeconds    prometheus.Histogram
	ckptFailures   prometheus.Counter
	ckptBacklog    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	o := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "ncsn", Subsystem: "coordinator", Name: name, Help: help}
	}
	m := &metrics{
		steps:          prometheus.NewCounter(prometheus.CounterOpts(o("committed_steps_total", "Steps committed by this coordinator."))),
		step:           prometheus.NewGauge(prometheus.GaugeOpts(o("step", "The committed step."))),
		loss:           prometheus.NewGauge(prometheus.GaugeOpts(o("loss", "Mean DSM loss of the last committed step."))),
		lossLevel:      prometheus.NewGaugeVec(prometheus.GaugeOpts(o("loss_per_level", "Mean DSM loss of the last committed step per σ level.")), []string{"level"}),
		samplesPerSec:  prometheus.NewGauge(prometheus.GaugeOpts(o("samples_per_second", "Committed samples per second over the last steps."))),
		epoch:          prometheus.NewGauge(prometheus.GaugeOpts(o("ring_epoch", "Epoch of the current ring view."))),
		members:        prometheus.NewGauge(prometheus.GaugeOpts(o("ring_members", "Workers in the current ring view."))),
		stateDownloads: prometheus.NewCounter(prometheus.CounterOpts(o("state_downloads_total", "Canonical state downloads by workers."))),
		hashMismatches: prometheus.NewCounter(prometheus.CounterOpts(o("hash_mismatches_total", "Replica hash reports that differed from the canonical state."))),
		commitBytes:    prometheus.NewCounter(prometheus.CounterOpts(o("commit_gradient_bytes_total", "Gradient bytes received in commits: the ring codec's encoded size, or raw float32 under codec none."))),
		ckptSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "ncsn", Subsystem: "coordinator", Name: "checkpoint_seconds",
			Help: "Time to write a checkpoint.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		ckptFailures: prometheus.NewCounter(prometheus.CounterOpts(o("checkpoint_failures_total", "Checkpoint writes that failed."))),
		ckptBacklog:  prometheus.NewGauge(prometheus.GaugeOpts(o("checkpoint_backlog", "Checkpoints asked for and not yet written, the one being written included."))),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.steps, m.step, m.loss, m.lossLevel, m.samplesPerSec, m.epoch, m.members, m.stateDownloads, m.hashMismatches, m.commitBytes, m.ckptSeconds, m.ckptFailures, m.ckptBacklog} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("coordinator: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) samplesPerSecValue() float64 {
	var d dto.Metric
	if m.samplesPerSec.Write(&d) != nil || d.Gauge == nil {
		return 0
	}
	return d.Gauge.GetValue()
}
