package model

import (
	"fmt"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// evalTag separates the evaluation's noise streams from the seed's other uses.
const evalTag = 0x6576616c // "eval"

// ScoreError is the σ²-weighted score error at one level:
// E‖σ·s_θ(x̃, σ) − σ·∇log p_σ(x̃)‖² over x̃ = x + σz, and for scale the same
// expectation of ‖σ·∇log p_σ(x̃)‖² (the error of a model that outputs zero).
type ScoreError struct {
	Sigma    float64
	Error    float64
	Baseline float64
}

// Relative is Error/Baseline: 0 for the exact score, 1 for a zero output.
func (e ScoreError) Relative() float64 {
	if e.Baseline == 0 {
		return 0
	}
	return e.Error / e.Baseline
}

// ScoreErrors measures a score model against an analytic score at every
// level, on clean samples x (n×dim), noised with streams keyed by seed.
// model must have been built for batch samples.
func ScoreErrors(m ScoreModel, batch, dim int, x []float32, sigmas []float64, exact func(x []float64, sigma float64, out []float64), seed uint64) ([]ScoreError, error) {
	n := len(x) / dim
	if n == 0 || batch < 1 {
		return nil, fmt.Errorf("model: score errors: %d samples, batch %d", n, batch)
	}
	xb := make([]float32, batch*dim)
	out := make([]float32, batch*dim)
	sig := make([]float32, batch)
	x64 := make([]float64, dim)
	s64 := make([]float64, dim)
	var r keyrand.Stream
	res := make([]ScoreError, len(sigmas))
	for i, s := range sigmas {
		res[i].Sigma = s
		for j := range sig {
			sig[j] = float32(s)
		}
		for lo := 0; lo < n; lo += batch {
			m0 := min(batch, n-lo)
			clear(xb)
			for b := 0; b < m0; b++ {
				r.Reset(seed, evalTag, uint64(i), uint64(lo+b))
				for j := 0; j < dim; j++ {
					xb[b*dim+j] = x[(lo+b)*dim+j] + float32(s*r.Norm())
				}
			}
			if err := m.Score(xb, sig, out); err != nil {
				return nil, fmt.Errorf("model: score errors at σ=%g: %w", s, err)
			}
			for b := 0; b < m0; b++ {
				for j := 0; j < dim; j++ {
					x64[j] = float64(xb[b*dim+j])
				}
				exact(x64, s, s64)
				for j := 0; j < dim; j++ {
					d := s * (float64(out[b*dim+j]) - s64[j])
					res[i].Error += d * d
					res[i].Baseline += s * s * s64[j] * s64[j]
				}
			}
		}
		res[i].Error /= float64(n)
		res[i].Baseline /= float64(n)
	}
	return res, nil
}
