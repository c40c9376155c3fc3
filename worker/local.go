package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
	"github.com/prometheus/client_golang/prometheus"
)

// StepInfo describes one applied step, for progress displays and metrics.
type StepInfo struct {
	Step, Total   int64 // steps applied so far, of Total
	Loss          float64
	PerLevel      []float64 // mean loss per σ level (0 where no sample fell)
	GradNorm      float64
	SamplesPerSec float64
	Workers       int
}

// LocalConfig configures a single-process run.
type LocalConfig struct {
	Run config.Config
	// Out is the run folder: checkpoints go to Out/checkpoints. A run
	// resumes from the newest checkpoint there that verifies.
	Out    string
	Logger *slog.Logger
	// OnStep, if set, is called after every step.
	OnStep func(StepInfo)
	// Registerer receives the run's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Snapshots, if set, is offered the EMA weights (the parameters when the
	// EMA is off) after every step; it copies the ones it takes and never blocks.
	Snapshots interface {
		Offer(step int64, weights []float32) bool
	}
}

// Local trains in one process: the same Trainer and update as a
// distributed worker, with the whole global batch as its slice.
type Local struct {
	cfg     LocalConfig
	net     *model.Net
	state   *model.State
	trainer *Trainer
	ckpt    *model.CheckpointDir
	sigmas  []float64
	log     *slog.Logger
	m       *localMetrics
}

// NewLocal opens the data, builds the model and resumes from the newest
// checkpoint in cfg.Out, if any.
func NewLocal(cfg LocalConfig) (*Local, error) {
	rc := cfg.Run
	if err := rc.Validate(); err != nil {
		return nil, err
	}
	if cfg.Out == "" {
		return nil, errors.New("worker: local run needs an output folder")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newLocalMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r, err := newReplica(rc)
	if err != nil {
		return nil, err
	}
	net, state := r.net, r.state
	l := &Local{
		cfg: cfg, net: net, state: state, trainer: r.trainer, sigmas: r.sigmas, log: log, m: m,
		ckpt: &model.CheckpointDir{Dir: filepath.Join(cfg.Out, "checkpoints"), Keep: rc.Run.Keep, Logger: log},
	}
	path, err := l.ckpt.Resume(net.Params(), state, rc.CheckpointRun())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("worker: %w", err)
	default:
		log.Info("resumed", "checkpoint", path, "step", state.Step())
	}
	return l, nil
}

// Net is the trained network; its parameters are the run's current ones.
func (l *Local) Net() *model.Net { return l.net }

// State is the run's state (parameters, EMA, Adam, step).
func (l *Local) State() *model.State { return l.state }

// Run trains until run.steps, checkpointing every run.checkpoint_every steps
// and at the end. A cancelled run writes a checkpoint of its last step first,
// so it loses nothing.
func (l *Local) Run(ctx context.Context) error {
	rc := l.cfg.Run
	B := rc.Train.GlobalBatch
	grad := make([]float32, len(l.state.Params))
	stats := model.NewLossStats(len(l.sigmas))
	start, t0 := l.state.Step(), time.Now()
	for l.state.Step() < rc.Run.Steps {
		if err := ctx.Err(); err != nil {
			if l.state.Step() > start {
				if _, serr := l.checkpoint(); serr != nil {
					return errors.Join(err, serr)
				}
			}
			return err
		}
		step := l.state.Step()
		stats.Reset()
		if err := l.trainer.Compute(uint64(step), 0, B, grad, stats); err != nil {
			return err
		}
		norm, err := l.state.Apply(grad, B)
		if err != nil {
			return err
		}
		done := l.state.Step()
		info := StepInfo{
			Step: done, Total: rc.Run.Steps, Loss: stats.Mean(), PerLevel: stats.PerLevel(), GradNorm: norm, Workers: 1,
			SamplesPerSec: float64((done-start)*int64(B)) / time.Since(t0).Seconds(),
		}
		l.m.observe(info)
		if l.cfg.OnStep != nil {
			l.cfg.OnStep(info)
		}
		if l.cfg.Snapshots != nil {
			l.cfg.Snapshots.Offer(done, l.state.SampleWeights())
		}
		if done%rc.Run.LogEvery == 0 || done == rc.Run.Steps {
			l.log.Info("step", "step", done, "of", rc.Run.Steps, "loss", info.Loss, "grad_norm", norm, "samples_per_sec", info.SamplesPerSec)
		}
		if done%rc.Run.CheckpointEvery == 0 || done == rc.Run.Steps {
			if _, err := l.checkpoint(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *Local) checkpoint() (string, error) {
	path, err := l.ckpt.Save(model.NewRunCheckpoint(l.net.Params(), l.state, l.cfg.Run.CheckpointRun()))
	if err != nil {
		return "", err
	}
	l.log.Info("checkpoint", "path", path, "step", l.state.Step())
	return path, nil
}

// Close releases the trainer's buffers. It is idempotent.
func (l *Local) Close() error { return l.trainer.Close() }
