package model

import (
	"fmt"
	"math"
	"sync"
)

// The score-matching estimators (train.loss). Each is noise-conditional as in
// ermongroup/ncsn: x̃ = x + σz with the sample's σ, the estimator applied to
// s(x̃, σ) at x̃, weighted by λ(σ) = σ^p (train.anneal_power).
const (
	// LossDSM is denoising score matching: ½‖s + z/σ‖².
	LossDSM = "dsm"
	// LossSSM is sliced score matching: vᵀ∇ₓ(vᵀs) + ½(vᵀs)².
	LossSSM = "ssm"
	// LossSSMVR is sliced score matching with variance reduction: vᵀ∇ₓ(vᵀs) + ½‖s‖².
	LossSSMVR = "ssm_vr"
	// LossFDSSM is finite-difference sliced score matching (Pang et al. 2020):
	// SSM with vᵀ∇ₓ(vᵀs) replaced by a central difference, forward passes only.
	LossFDSSM = "fd_ssm"
	// LossESM is exact score matching: tr(∇ₓs) + ½‖s‖².
	LossESM = "esm"
)

// MaxESMDim bounds esm's data dimension: its exact trace takes one
// Jacobian-vector product per dimension, so a step costs D times SSM's.
const MaxESMDim = 16

// LossConfig selects the training objective (keys of the run config's train section).
type LossConfig struct {
	// Loss is the estimator: dsm, ssm, ssm_vr, fd_ssm or esm.
	Loss string `yaml:"loss" json:"loss"`
	// AnnealPower is p of the loss weight λ(σ) = σ^p; 2 makes every level's
	// DSM loss about the same size.
	AnnealPower float64 `yaml:"anneal_power" json:"anneal_power"`
	// Projection is the distribution of the sliced estimators' directions v:
	// rademacher (±1) or gaussian.
	Projection string `yaml:"projection" json:"projection"`
	// Particles is the number of directions v per sample (ssm, ssm_vr, fd_ssm).
	Particles int `yaml:"n_particles" json:"n_particles"`
	// FDEps sets fd_ssm's difference step: x̃ ± h·v with ‖h·v‖ = fd_eps·σ, a
	// fixed fraction of the scale over which p_σ, and so s(·, σ), changes.
	FDEps float64 `yaml:"fd_eps" json:"fd_eps"`
}

// DefaultLoss is DSM with λ(σ) = σ², the published NCSN objective.
func DefaultLoss() LossConfig {
	return LossConfig{Loss: LossDSM, AnnealPower: 2, Projection: "rademacher", Particles: 1, FDEps: 0.1}
}

// maxParticles keeps a step's tangent buffers (batch·particles·D) bounded.
const maxParticles = 64

// Validate checks the keys and that the estimator can run on a network of
// architecture arch for data of dim values per example.
func (c LossConfig) Validate(arch string, dim int) error {
	switch c.Loss {
	case LossDSM, LossSSM, LossSSMVR, LossFDSSM, LossESM:
	default:
		return fmt.Errorf("train.loss: %q, want dsm, ssm, ssm_vr, fd_ssm or esm", c.Loss)
	}
	switch {
	case !(c.AnnealPower >= 0 && c.AnnealPower <= 4):
		// Beyond that the weights of a σ range like 20 … 0.01 leave float32's useful range.
		return fmt.Errorf("train.anneal_power: %v, want a value in [0, 4] (2 is NCSN's λ(σ) = σ²)", c.AnnealPower)
	case c.Projection != "rademacher" && c.Projection != "gaussian":
		return fmt.Errorf("train.projection: %q, want rademacher or gaussian", c.Projection)
	case c.Particles < 1 || c.Particles > maxParticles:
		return fmt.Errorf("train.n_particles: %d, want 1..%d", c.Particles, maxParticles)
	case !(c.FDEps > 0 && c.FDEps <= 1):
		return fmt.Errorf("train.fd_eps: %v, want a value in (0, 1]", c.FDEps)
	}
	if arch != "mlp" && (c.Loss == LossSSM || c.Loss == LossSSMVR || c.Loss == LossESM) {
		return fmt.Errorf("train.loss: %s needs exact double backpropagation, which only model.arch mlp has; "+
			"use train.loss=fd_ssm (finite differences, forward passes only) for model.arch %s", c.Loss, arch)
	}
	if c.Loss == LossESM && dim > MaxESMDim {
		return fmt.Errorf("train.loss: esm computes the full Jacobian trace, one pass per data dimension, "+
			"so it is limited to D <= %d; this data has D = %d: use ssm_vr or fd_ssm", MaxESMDim, dim)
	}
	return nil
}

// projected reports whether the estimator draws directions v.
func (c LossConfig) projected() bool {
	return c.Loss == LossSSM || c.Loss == LossSSMVR || c.Loss == LossFDSSM
}

// EstimatorOf computes one training objective for a fixed batch size: the
// per-sample losses and the sum of their parameter gradients. DSM and FD-SSM
// run on the network's gorgonia graph, SSM, SSM-VR and ESM on the MLP's
// hand-written forward-mode pass. Run calls on one EstimatorOf are
// serialised; see GradOf for concurrency with other users of the network.
type EstimatorOf[T Float] struct {
	mu    sync.Mutex
	loss  LossConfig
	batch int
	dim   int
	dsm   *gradParts[T]
	fd    *fdGrad[T]
	jvp   *mlpJVP[T]
}

// Estimator is the float32 objective used for training.
type Estimator = EstimatorOf[float32]

// NewEstimator builds the objective loss for batch samples; a loss the
// network cannot run is refused with the message of LossConfig.Validate.
func (n *NetOf[T]) NewEstimator(loss LossConfig, batch int) (*EstimatorOf[T], error) {
	if err := loss.Validate(n.cfg.Arch, n.dim); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if batch < 1 {
		return nil, fmt.Errorf("model: batch %d, want >= 1", batch)
	}
	e := &EstimatorOf[T]{loss: loss, batch: batch, dim: n.dim}
	var err error
	switch loss.Loss {
	case LossDSM:
		e.dsm, err = n.newGradParts(batch, loss.AnnealPower, workers(batch))
	case LossFDSSM:
		e.fd, err = n.newFDGrad(batch, loss)
	default:
		e.jvp = n.newMLPJVP(batch, loss)
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Projections is the number of direction values Run takes in v:
// batch·n_particles·D for ssm, ssm_vr and fd_ssm, 0 for dsm and esm.
func (e *EstimatorOf[T]) Projections() int {
	if !e.loss.projected() {
		return 0
	}
	return e.batch * e.loss.Particles * e.dim
}

// Run computes the per-sample losses λ(σ_b)·J_b into losses and the sum
// over the batch of their parameter gradients into grad
// (len(Params().Data)). x and z are batch × D in the data's own layout (the
// sample is x + σz), sigma has one value per sample, and v holds
// Projections() directions, sample-major: v[(b·n_particles + k)·D + j].
func (e *EstimatorOf[T]) Run(x, z, v, sigma, grad, losses []T) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dsm == nil && e.fd == nil && e.jvp == nil {
		return ErrClosed
	}
	if len(v) != e.Projections() {
		return fmt.Errorf("model: %s: v has %d values, want %d", e.loss.Loss, len(v), e.Projections())
	}
	switch {
	case e.dsm != nil:
		return e.dsm.run(x, z, sigma, grad, losses)
	case e.fd != nil:
		return e.fd.run(x, z, v, sigma, grad, losses)
	}
	return e.jvp.run(x, z, v, sigma, grad, losses)
}

// Close releases the graph; it is idempotent.
func (e *EstimatorOf[T]) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var err error
	switch {
	case e.dsm != nil:
		err = e.dsm.close()
	case e.fd != nil:
		err = e.fd.close()
	}
	e.dsm, e.fd, e.jvp = nil, nil, nil
	return err
}

// lossWeight is λ(σ)·σ^−shift = σ^(p−shift): the estimators' formulas on the
// raw output o = σ·s carry σ^−2 (quadratic terms) or σ^−1 (trace terms).
func lossWeight(sigma, p, shift float64) float64 {
	if p == shift {
		return 1
	}
	return math.Pow(sigma, p-shift)
}
