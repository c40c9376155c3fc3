package model

import (
	"fmt"
	"math"
)

// AdamConfig holds the optimizer's hyperparameters (YAML section "train").
type AdamConfig struct {
	LR    float64 `yaml:"lr"`
	Beta1 float64 `yaml:"beta1"`
	Beta2 float64 `yaml:"beta2"`
	Eps   float64 `yaml:"eps"`
	// ClipNorm, when > 0, rescales the gradient so its global L2 norm is at most ClipNorm.
	ClipNorm float64 `yaml:"clip_norm"`
}

// Validate reports the first invalid key, by its path in the run config.
func (c AdamConfig) Validate() error {
	switch {
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("train.lr: %v, want a finite value > 0", c.LR)
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return fmt.Errorf("train.beta1: %v, want [0, 1)", c.Beta1)
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("train.beta2: %v, want [0, 1)", c.Beta2)
	case !(c.Eps > 0):
		return fmt.Errorf("train.eps: %v, want > 0", c.Eps)
	case !(c.ClipNorm >= 0):
		return fmt.Errorf("train.clip_norm: %v, want >= 0 (0 disables clipping)", c.ClipNorm)
	}
	return nil
}

// Adam is Adam (Kingma & Ba) on flat buffers, with PyTorch's bias correction.
// Given the same inputs it produces bitwise the same outputs everywhere, which is
// what lets replicas and the coordinator's canonical state stay equal.
type Adam struct {
	cfg  AdamConfig
	M, V []float32
	// Step is the number of updates applied so far.
	Step int64
}

// NewAdam returns an optimizer for n parameters with zero moments.
func NewAdam(cfg AdamConfig, n int) (*Adam, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Adam{cfg: cfg, M: make([]float32, n), V: make([]float32, n)}, nil
}

// GradNorm is the global L2 norm of g, accumulated in float64.
func GradNorm(g []float32) float64 {
	var s float64
	for _, v := range g {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s)
}

// Update applies one step to params with gradient grad (already averaged over the batch).
// It returns the gradient norm before clipping.
func (a *Adam) Update(params, grad []float32) (float64, error) {
	if len(params) != len(a.M) || len(grad) != len(a.M) {
		return 0, fmt.Errorf("model: adam: %d params, %d grads, want %d", len(params), len(grad), len(a.M))
	}
	norm := GradNorm(grad)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm, fmt.Errorf("model: adam: gradient norm is %v", norm)
	}
	scale := 1.0
	if a.cfg.ClipNorm > 0 && norm > a.cfg.ClipNorm {
		scale = a.cfg.ClipNorm / norm
	}
	a.Step++
	b1, b2 := a.cfg.Beta1, a.cfg.Beta2
	bc1 := 1 - math.Pow(b1, float64(a.Step))
	bc2 := math.Sqrt(1 - math.Pow(b2, float64(a.Step)))
	stepSize := a.cfg.LR / bc1
	eps := a.cfg.Eps
	m, v := a.M, a.V
	for i, g := range grad {
		gd := float64(g) * scale
		mi := b1*float64(m[i]) + (1-b1)*gd
		vi := b2*float64(v[i]) + (1-b2)*gd*gd
		m[i], v[i] = float32(mi), float32(vi)
		params[i] = float32(float64(params[i]) - stepSize*mi/(math.Sqrt(vi)/bc2+eps))
	}
	return norm, nil
}

// EMA keeps an exponential moving average of the parameters: ema ← d·ema + (1−d)·p.
func EMA(ema, params []float32, decay float64) {
	for i, p := range params {
		ema[i] = float32(decay*float64(ema[i]) + (1-decay)*float64(p))
	}
}
