// Package worker owns the training loop: a slice of the global batch → the
// score model's gradient (train.loss) → (all-reduce) → optimizer step. The
// same Trainer serves the single-process run and the distributed worker.
package worker

import (
	"fmt"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// Batches gives the examples of a step's global batch by position.
type Batches interface {
	// Fill writes the examples at global positions lo…hi−1 of step into dst.
	Fill(step uint64, lo, hi int, dst []float32) error
}

// Trainer computes one worker's share of a step: the SUM of per-sample
// gradients of the run's objective over its slice of the global batch, and
// the slice's loss sums per σ level. Buffers are reused across steps; it is
// used by one goroutine.
type Trainer struct {
	net     *model.Net
	batches Batches
	noise   model.Noise
	loss    model.LossConfig
	dim     int

	ests   map[int]*model.Estimator
	x, z   []float32
	v      []float32 // the sliced estimators' directions
	sigma  []float32
	losses []float32
	level  []int
}

// TrainerConfig wires a Trainer.
type TrainerConfig struct {
	Net     *model.Net
	Batches Batches
	Seed    uint64
	Sigmas  []float64
	// Dim is the number of values per example.
	Dim int
	// Loss is the objective (train.loss and its keys).
	Loss model.LossConfig
}

// NewTrainer validates cfg.
func NewTrainer(cfg TrainerConfig) (*Trainer, error) {
	if cfg.Net == nil || cfg.Batches == nil || len(cfg.Sigmas) == 0 || cfg.Dim < 1 {
		return nil, fmt.Errorf("worker: trainer: need a net, batches, σ levels and dim (got dim %d, %d levels)", cfg.Dim, len(cfg.Sigmas))
	}
	if err := cfg.Loss.Validate(cfg.Net.Config().Arch, cfg.Dim); err != nil {
		return nil, fmt.Errorf("worker: trainer: %w", err)
	}
	return &Trainer{
		net:     cfg.Net,
		batches: cfg.Batches,
		noise:   model.Noise{Seed: cfg.Seed, Sigmas: cfg.Sigmas},
		loss:    cfg.Loss,
		dim:     cfg.Dim,
		ests:    map[int]*model.Estimator{},
	}, nil
}

// Compute writes into grad the sum of the per-sample gradients over global
// positions lo…hi−1 of step (zero for an empty slice) and adds the slice's
// losses to stats.
func (t *Trainer) Compute(step uint64, lo, hi int, grad []float32, stats model.LossStats) error {
	n := hi - lo
	if n <= 0 {
		clear(grad)
		return nil
	}
	e, ok := t.ests[n]
	if !ok {
		var err error
		if e, err = t.net.NewEstimator(t.loss, n); err != nil {
			return fmt.Errorf("worker: gradient for batch %d: %w", n, err)
		}
		t.ests[n] = e
	}
	if cap(t.x) < n*t.dim {
		t.x = make([]float32, n*t.dim)
		t.z = make([]float32, n*t.dim)
		t.sigma = make([]float32, n)
		t.losses = make([]float32, n)
		t.level = make([]int, n)
	}
	if cap(t.v) < e.Projections() {
		t.v = make([]float32, e.Projections())
	}
	x, z := t.x[:n*t.dim], t.z[:n*t.dim]
	sigma, losses, level := t.sigma[:n], t.losses[:n], t.level[:n]
	if err := t.batches.Fill(step, lo, hi, x); err != nil {
		return fmt.Errorf("worker: step %d: %w", step, err)
	}
	t.noise.Draw(step, lo, level, sigma, z)
	v := t.v[:e.Projections()]
	t.noise.Project(step, lo, n, t.loss.Projection == "gaussian", v)
	if err := e.Run(x, z, v, sigma, grad, losses); err != nil {
		return fmt.Errorf("worker: step %d: %w", step, err)
	}
	stats.Add(level, losses)
	return nil
}

// Close releases the per-batch-size gradient machines.
func (t *Trainer) Close() error {
	for n, e := range t.ests {
		e.Close()
		delete(t.ests, n)
	}
	return nil
}

// replica is a run's network, optimizer state and trainer, built in one place
// for the single-process loop and the distributed worker, so that both start
// from the same bits and compute the same steps.
type replica struct {
	net     *model.Net
	state   *model.State
	trainer *Trainer
	sigmas  []float64
}

func newReplica(rc config.Config) (*replica, error) {
	// An unresolved auto schedule has no σ levels yet.
	if err := rc.Validate(); err != nil {
		return nil, err
	}
	train, _, err := data.Open(rc.Data, rc.Run.Seed)
	if err != nil {
		return nil, err
	}
	batches, err := data.NewSampler(train, rc.Train.GlobalBatch, rc.Run.Seed, rc.Data)
	if err != nil {
		return nil, err
	}
	net, err := model.New(rc.Model, train.Shape())
	if err != nil {
		return nil, err
	}
	net.Init(rc.Run.Seed)
	state, err := model.NewState(net.Params().Data, rc.Train.AdamConfig, rc.Train.EMA)
	if err != nil {
		return nil, err
	}
	sigmas := rc.Noise.Sigmas()
	tr, err := NewTrainer(TrainerConfig{Net: net, Batches: batches, Seed: rc.Run.Seed, Sigmas: sigmas, Dim: data.Size(train), Loss: rc.Train.LossConfig})
	if err != nil {
		return nil, err
	}
	return &replica{net: net, state: state, trainer: tr, sigmas: sigmas}, nil
}
