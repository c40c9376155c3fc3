package samples

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ncsn/ncsn/model/config"
)

// SnapshotScorer scores the samples of a snapshot, e.g. a small-N FID/KID
// against the held-out split. Its values become columns of snapshots.csv and
// the ncsn_snapshot_score gauge.
type SnapshotScorer interface {
	// Names are the scores' names, e.g. "fid", "kid": the CSV columns and the gauge's labels.
	Names() []string
	// Score scores n samples x (n×D values, images in [0, 1]) and returns one value per name.
	Score(ctx context.Context, x []float32, n int) ([]float64, error)
}

// SnapshotConfig configures a Snapshotter.
type SnapshotConfig struct {
	// Run is the resolved run config: run.sample_every, run.snapshot_samples,
	// the model and the sampler settings (sample.*) the snapshots are drawn with.
	Run config.Config
	// Dir receives step-NNNNNN.png (.csv for 2-D points) and snapshots.csv.
	Dir    string
	Logger *slog.Logger
	// Registerer receives the snapshot metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Scorer, if set, scores each snapshot.
	Scorer SnapshotScorer
}

// Snapshotter draws a sample grid from the weights it is offered every
// run.sample_every steps, as ncsnv2 and score_sde snapshot during training.
// Offers never block the training step: the offered weights are copied and
// drawn by the goroutine that calls Run; an offer that comes while the
// previous snapshot is still in progress is skipped and counted.
type Snapshotter struct {
	cfg   SnapshotConfig
	every int64
	log   *slog.Logger
	m     *snapshotMetrics

	busy    atomic.Bool  // a snapshot is queued or in progress; it owns weights
	weights []float32    // the offered weights being drawn
	jobs    chan int64   // the step of the snapshot to draw (at most one queued)
	skipped atomic.Int64 // offers skipped while the current snapshot is in progress

	closeOnce sync.Once
	closed    chan struct{}
}

// NewSnapshotter validates cfg and creates cfg.Dir.
func NewSnapshotter(cfg SnapshotConfig) (*Snapshotter, error) {
	rc := cfg.Run
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("samples: snapshots: %w", err)
	}
	if rc.Run.SampleEvery < 1 {
		return nil, fmt.Errorf("samples: snapshots: run.sample_every is %d; set it >= 1 to snapshot", rc.Run.SampleEvery)
	}
	if cfg.Dir == "" {
		return nil, errors.New("samples: snapshots: no folder")
	}
	if cfg.Scorer != nil {
		names := cfg.Scorer.Names()
		if len(names) == 0 || slices.Contains(names, "") || len(slices.Compact(slices.Sorted(slices.Values(names)))) != len(names) {
			return nil, fmt.Errorf("samples: snapshots: scorer names %q: want distinct non-empty names", names)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("samples: snapshots: %w", err)
	}
	m, err := newSnapshotMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Snapshotter{cfg: cfg, every: rc.Run.SampleEvery, log: log, m: m, jobs: make(chan int64, 1), closed: make(chan struct{})}, nil
}

// Offer hands the weights after step to the snapshotter. At every
// run.sample_every-th step before the last (whose samples are the run's
// final ones, run.samples) it copies them and queues a snapshot, unless the
// previous one is still in progress: then it skips this one (counted in
// snapshots.csv and ncsn_snapshot_skipped_total). It never waits, and
// reports whether it took the weights. Offers come from one goroutine at a
// time (the training loop, or the coordinator's commit).
func (s *Snapshotter) Offer(step int64, weights []float32) bool {
	if step <= 0 || step%s.every != 0 || step >= s.cfg.Run.Run.Steps {
		return false
	}
	select {
	case <-s.closed:
		return false
	default:
	}
	if !s.busy.CompareAndSwap(false, true) {
		s.skipped.Add(1)
		s.m.skipped.Inc()
		s.log.Warn("snapshot skipped: the previous one is still drawing", "step", step)
		return false
	}
	s.weights = append(s.weights[:0], weights...)
	s.jobs <- step // never blocks: busy admits one job at a time
	return true
}

// Run draws the offered snapshots, one at a time, in the calling goroutine
// until Close (after the snapshot in progress and a queued one) or until ctx
// ends (which stops the one in progress). A snapshot that fails is logged
// and counted; training goes on. Run returns nil after Close.
func (s *Snapshotter) Run(ctx context.Context) error {
	for {
		select {
		case step := <-s.jobs:
			s.snapshot(ctx, step)
		case <-s.closed:
			select {
			case step := <-s.jobs:
				s.snapshot(ctx, step)
			default:
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops taking offers; Run returns once the snapshot in progress is
// written. It is idempotent.
func (s *Snapshotter) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

// snapshot draws, writes and scores one snapshot and releases the weights.
func (s *Snapshotter) snapshot(ctx context.Context, step int64) {
	t0 := time.Now()
	path, scores, err := s.draw(ctx, step)
	secs := time.Since(t0).Seconds()
	// Offers are skipped only while busy: after the release every skip of
	// this snapshot is counted, and the next offer is taken.
	s.busy.Store(false)
	skipped := s.skipped.Swap(0)
	if err == nil {
		err = s.appendCSV(step, secs, skipped, scores)
	}
	if err != nil {
		if ctx.Err() != nil {
			s.log.Info("snapshot abandoned: the run is over or cancelled", "step", step)
			return
		}
		s.m.failures.Inc()
		s.log.Error("snapshot failed; training goes on", "step", step, "err", err)
		return
	}
	s.m.snapshots.Inc()
	s.m.seconds.Observe(secs)
	s.m.step.Set(float64(step))
	attrs := []any{"step", step, "path", path, "seconds", secs, "skipped", skipped}
	if s.cfg.Scorer != nil {
		for i, name := range s.cfg.Scorer.Names() {
			s.m.score.WithLabelValues(name).Set(scores[i])
			attrs = append(attrs, name, scores[i])
		}
	}
	s.log.Info("snapshot", attrs...)
}

func (s *Snapshotter) draw(ctx context.Context, step int64) (path string, scores []float64, err error) {
	rc := s.cfg.Run
	n := rc.Run.SnapshotSamples
	// The run seed for every snapshot: the same starting noise each time, so
	// the grids show the model changing, not the draw.
	x, err := Draw(ctx, rc, s.weights, Options{N: n, Seed: rc.Run.Seed, Sample: rc.Sample})
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(s.cfg.Dir, fmt.Sprintf("step-%06d%s", step, filepath.Ext(DefaultName(rc))))
	if err := Write(path, rc, x); err != nil {
		return "", nil, err
	}
	if s.cfg.Scorer == nil {
		return path, nil, nil
	}
	scores, err = s.cfg.Scorer.Score(ctx, x, n)
	if err != nil {
		return "", nil, fmt.Errorf("samples: snapshot score: %w", err)
	}
	if len(scores) != len(s.cfg.Scorer.Names()) {
		return "", nil, fmt.Errorf("samples: snapshot score: %d values for %d names", len(scores), len(s.cfg.Scorer.Names()))
	}
	return path, scores, nil
}

// appendCSV adds a row to Dir/snapshots.csv, with the header if the file is new:
// step, seconds (drawing, writing and scoring), skipped (offers skipped while
// this snapshot was in progress), then the scorer's columns.
func (s *Snapshotter) appendCSV(step int64, secs float64, skipped int64, scores []float64) error {
	path := filepath.Join(s.cfg.Dir, "snapshots.csv")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("samples: %w", err)
	}
	var b []byte
	if st.Size() == 0 {
		b = append(b, "step,seconds,skipped"...)
		if s.cfg.Scorer != nil {
			for _, name := range s.cfg.Scorer.Names() {
				b = append(b, ',')
				b = append(b, name...)
			}
		}
		b = append(b, '\n')
	}
	b = strconv.AppendInt(b, step, 10)
	b = append(b, ',')
	b = strconv.AppendFloat(b, secs, 'f', 3, 64)
	b = append(b, ',')
	b = strconv.AppendInt(b, skipped, 10)
	for _, v := range scores {
		b = append(b, ',')
		b = strconv.AppendFloat(b, v, 'g', 6, 64)
	}
	b = append(b, '\n')
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	return nil
}

type snapshotMetrics struct {
	snapshots, skipped, failures prometheus.Counter
	seconds                      prometheus.Histogram
	step                         prometheus.Gauge
	score                        *prometheus.GaugeVec
}

func newSnapshotMetrics(reg prometheus.Registerer) (*snapshotMetrics, error) {
	o := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "ncsn", Subsystem: "snapshot", Name: name, Help: help}
	}
	m := &snapshotMetrics{
		snapshots: prometheus.NewCounter(prometheus.CounterOpts(o("total", "Snapshot grids drawn during training."))),
		skipped:   prometheus.NewCounter(prometheus.CounterOpts(o("skipped_total", "Snapshots skipped because the previous one was still drawing."))),
		failures:  prometheus.NewCounter(prometheus.CounterOpts(o("failures_total", "Snapshots that failed."))),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "ncsn", Subsystem: "snapshot", Name: "seconds",
			Help: "Time to draw, write and score a snapshot.", Buckets: prometheus.ExponentialBuckets(0.125, 2, 14)}),
		step:  prometheus.NewGauge(prometheus.GaugeOpts(o("step", "Step of the last snapshot."))),
		score: prometheus.NewGaugeVec(prometheus.GaugeOpts(o("score", "Scores of the last snapshot (e.g. small-N FID/KID).")), []string{"name"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.snapshots, m.skipped, m.failures, m.seconds, m.step, m.score} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("samples: register snapshot metrics: %w", err)
			}
		}
	}
	return m, nil
}
