package main

import (
	"log/slog"
	"path/filepath"

	"github.com/ncsn/ncsn/internal/plot"
	"github.com/ncsn/ncsn/internal/runlock"
	"github.com/ncsn/ncsn/model/config"
)

// runFolder is a run's output folder as train and coordinator keep it while they run: held
// against a second run, every step's loss in loss.csv and its curve in loss.png.
type runFolder struct {
	dir    string
	rc     config.Config
	log    *slog.Logger
	lock   *runlock.Lock
	losses *plot.LossLog
}

// openRunFolder locks dir and opens its loss log; with resume set, the run starts from
// another run's checkpoint (startFrom), which may change rc.
func openRunFolder(dir, resume string, rc *config.Config, log *slog.Logger) (*runFolder, error) {
	lock, err := lockRun(dir)
	if err != nil {
		return nil, err
	}
	f := &runFolder{dir: dir, log: log, lock: lock}
	if resume != "" {
		if err := startFrom(resume, dir, rc, log); err != nil {
			f.close()
			return nil, err
		}
	}
	f.rc = *rc
	if f.losses, err = plot.OpenLossLog(f.lossPath(), rc.Noise.Levels); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

func (f *runFolder) lossPath() string  { return filepath.Join(f.dir, "loss.csv") }
func (f *runFolder) curvePath() string { return filepath.Join(f.dir, "loss.png") }

// record logs step's loss; the file is flushed every run.log_every steps and at the last, and
// the curve is redrawn at every checkpoint, to watch while the run goes on.
func (f *runFolder) record(step int64, loss float64, perLevel []float64) {
	if err := f.losses.Add(step, loss, perLevel); err != nil {
		f.log.Warn("loss log", "err", err)
	}
	last := step >= f.rc.Run.Steps
	if step%f.rc.Run.LogEvery == 0 || last {
		f.losses.Flush()
	}
	if step%f.rc.Run.CheckpointEvery == 0 && !last {
		if err := f.losses.Plot(f.curvePath(), lossTitle(f.rc)); err != nil {
			f.log.Warn("loss curve", "err", err)
		}
	}
}

// finish closes the loss log and draws the whole run's curve, returning its path.
func (f *runFolder) finish() (string, error) {
	if err := f.losses.Close(); err != nil {
		return "", err
	}
	if err := plot.LossCurveFile(f.lossPath(), f.curvePath(), lossTitle(f.rc)); err != nil {
		return "", err
	}
	return f.curvePath(), nil
}

// close closes the loss log and releases the folder. It is idempotent.
func (f *runFolder) close() {
	if f.losses != nil {
		f.losses.Close()
	}
	f.lock.Release()
	f.lock = nil
}
