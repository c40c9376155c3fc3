package model

import (
	"context"
	"fmt"
	"math"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// sampleTag separates the samplers' noise streams from the seed's other uses.
const sampleTag = 0x736d706c // "smpl"

// SampleConfig holds the annealed Langevin settings (YAML section "sample").
type SampleConfig struct {
	StepsPerLevel int     `yaml:"steps_per_level"`
	Eps           float64 `yaml:"eps"`
	// Denoise adds NCSNv2's final noise-free step x ← x + σ_L²·s(x, σ_L).
	Denoise bool `yaml:"denoise"`
}

// Validate reports the first invalid key, by its path in the run config.
func (c SampleConfig) Validate() error {
	switch {
	case c.StepsPerLevel < 1:
		return fmt.Errorf("sample.steps_per_level: %d, want >= 1", c.StepsPerLevel)
	case !(c.Eps > 0) || math.IsInf(c.Eps, 0):
		return fmt.Errorf("sample.eps: %v, want a finite value > 0", c.Eps)
	}
	return nil
}

// ScoreModel evaluates s(x, σ) for a fixed number of samples at once
// (x and out are batch×dim, sigma has one value per sample).
type ScoreModel interface {
	Score(x, sigma, out []float32) error
}

// Sampler runs Langevin dynamics with a score model over any number of
// samples, Batch at a time. Sample i's noise comes from a stream keyed by
// (Seed, i), so results do not depend on Batch.
type Sampler struct {
	Model ScoreModel
	Batch int // the batch size Model was built for
	Dim   int // values per sample
	Seed  uint64
	// Progress, if set, is called after every Langevin step with the steps
	// done and the total over all batches.
	Progress func(done, total int)
}

// InitUniform fills x with U[lo, hi) draws keyed by (seed, index): the
// starting point of the samplers (a box around 2-D data, [0,1] for images).
func InitUniform(x []float32, lo, hi float64, seed uint64) {
	r := keyrand.New(seed, sampleTag, 0x696e6974) // "init"
	for i := range x {
		x[i] = float32(lo + (hi-lo)*r.Float64())
	}
}

type level struct {
	sigma, alpha float64
	steps        int
}

// Annealed runs annealed Langevin dynamics in place on x (n×Dim) as the
// reference code runs it: for each σ_i (descending), StepsPerLevel steps of
// x ← x + α_i·s(x, σ_i) + √(2α_i)·z with α_i = ε·σ_i²/σ_L².
func (s *Sampler) Annealed(ctx context.Context, x []float32, sigmas []float64, cfg SampleConfig) error {
	lv, err := annealedLevels(sigmas, cfg)
	if err != nil {
		return err
	}
	return s.run(ctx, x, lv, cfg.Denoise, nil)
}

func annealedLevels(sigmas []float64, cfg SampleConfig) ([]level, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(sigmas) == 0 {
		return nil, fmt.Errorf("model: annealed sampler: no σ levels")
	}
	sl := sigmas[len(sigmas)-1]
	lv := make([]level, len(sigmas))
	for i, sg := range sigmas {
		lv[i] = level{sigma: sg, alpha: cfg.Eps * sg * sg / (sl * sl), steps: cfg.StepsPerLevel}
	}
	return lv, nil
}

// Langevin runs plain (non-annealed) Langevin dynamics at one σ with step size alpha.
func (s *Sampler) Langevin(ctx context.Context, x []float32, sigma float64, steps int, alpha float64) error {
	if steps < 1 || !(alpha > 0) || !(sigma > 0) {
		return fmt.Errorf("model: langevin sampler: steps %d, alpha %v, sigma %v: want positive values", steps, alpha, sigma)
	}
	return s.run(ctx, x, []level{{sigma: sigma, alpha: alpha, steps: steps}}, false, nil)
}

// run is the one Langevin loop; in, if not nil, clamps the known values.
func (s *Sampler) run(ctx context.Context, x []float32, levels []level, denoise bool, in *Inpainting) error {
	if s.Batch < 1 || s.Dim < 1 {
		return fmt.Errorf("model: sampler: batch %d, dim %d: want positive values", s.Batch, s.Dim)
	}
	if len(x)%s.Dim != 0 {
		return fmt.Errorf("model: sampler: len(x) = %d is not a multiple of dim %d", len(x), s.Dim)
	}
	n := len(x) / s.Dim
	perBatch := 0
	for _, l := range levels {
		perBatch += l.steps
	}
	batches := (n + s.Batch - 1) / s.Batch
	total, done := perBatch*batches, 0

	B, D := s.Batch, s.Dim
	xb := make([]float32, B*D)
	score := make([]float32, B*D)
	sig := make([]float32, B)
	rngs := make([]keyrand.Stream, B)
	var ib *inpaintBatch
	if in != nil {
		ib = &inpaintBatch{in: in, dim: D, noisy: make([]float32, B*D)}
	}
	for lo := 0; lo < n; lo += B {
		m := min(B, n-lo)
		// Pad a short last batch with zeros: the model's batch size is fixed.
		copy(xb, x[lo*D:(lo+m)*D])
		clear(xb[m*D:])
		for b := 0; b < m; b++ {
			rngs[b].Reset(s.Seed, sampleTag, uint64(lo+b))
		}
		if ib != nil {
			ib.reset(lo, m)
		}
		for li, l := range levels {
			for i := range sig {
				sig[i] = float32(l.sigma)
			}
			if ib != nil {
				ib.level(s.Seed, li, l.sigma)
				ib.clamp(xb, ib.noisy)
			}
			noise := math.Sqrt(2 * l.alpha)
			for t := 0; t < l.steps; t++ {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("model: sampler: %w", err)
				}
				if err := s.Model.Score(xb, sig, score); err != nil {
					return fmt.Errorf("model: sampler: score at σ=%g: %w", l.sigma, err)
				}
				for b := 0; b < m; b++ {
					r := &rngs[b]
					for j := b * D; j < (b+1)*D; j++ {
						xb[j] = float32(float64(xb[j]) + l.alpha*float64(score[j]) + noise*r.Norm())
					}
				}
				if ib != nil {
					ib.clamp(xb, ib.noisy)
				}
				done++
				if s.Progress != nil {
					s.Progress(done, total)
				}
			}
		}
		if denoise {
			last := levels[len(levels)-1].sigma
			for i := range sig {
				sig[i] = float32(last)
			}
			if err := s.Model.Score(xb, sig, score); err != nil {
				return fmt.Errorf("model: sampler: denoise: %w", err)
			}
			for j := 0; j < m*D; j++ {
				xb[j] = float32(float64(xb[j]) + last*last*float64(score[j]))
			}
		}
		if ib != nil {
			ib.clamp(xb, ib.observe)
		}
		copy(x[lo*D:(lo+m)*D], xb[:m*D])
	}
	return nil
}
