package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/model/samples"
)

// snapshots runs a run's snapshotter (run.sample_every) beside training: one
// goroutine of this process draws the grids into DIR/snapshots while the
// steps go on.
type snapshots struct {
	s    *samples.Snapshotter
	done chan error
	once sync.Once
	err  error
}

// startSnapshots starts the snapshotter, or returns nil when run.sample_every is 0.
func startSnapshots(ctx context.Context, rc config.Config, out string, log *slog.Logger, reg prometheus.Registerer) (*snapshots, error) {
	if rc.Run.SampleEvery == 0 {
		return nil, nil
	}
	dir := filepath.Join(out, "snapshots")
	s, err := samples.NewSnapshotter(samples.SnapshotConfig{Run: rc, Dir: dir, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	sn := &snapshots{s: s, done: make(chan error, 1)}
	go func() { sn.done <- s.Run(ctx) }()
	log.Info("snapshots", "every", rc.Run.SampleEvery, "samples", rc.Run.SnapshotSamples, "dir", dir)
	return sn, nil
}

// stop takes no more offers and waits for the snapshot in progress. It is idempotent.
func (s *snapshots) stop() error {
	if s == nil {
		return nil
	}
	s.once.Do(func() {
		s.s.Close()
		s.err = <-s.done
	})
	return s.err
}
