package model

import (
	"context"
	"fmt"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// inpaintTag separates the observation noise of inpainting from the
// sampler's Langevin noise, so that a mask with nothing known reproduces
// Annealed exactly.
const inpaintTag = 0x696e7074 // "inpt"

// Inpainting holds what is known of each sample: Known[j] marks value j of x
// as observed and Observed[j] is its value (ignored where Known[j] is false).
// Both have one entry per value of x.
type Inpainting struct {
	Known    []bool
	Observed []float32
}

// Inpaint runs annealed Langevin inpainting in place on x (n×Dim) as
// ermongroup/ncsn's anneal_Langevin_dynamics_inpainting does: at level i it
// draws ỹ_i = y + σ_i·z once (z keyed by (Seed, sample, level)) and sets the
// known values of x to ỹ_i before the level's steps and after every step, so
// the unknown values follow the score of the whole noised image. After the
// last level (and the denoising step, if on) the known values are set to y
// exactly. x holds the start for the unknown values (U[0,1] or noised data).
func (s *Sampler) Inpaint(ctx context.Context, x []float32, sigmas []float64, cfg SampleConfig, in Inpainting) error {
	if len(in.Known) != len(x) || len(in.Observed) != len(x) {
		return fmt.Errorf("model: inpaint: %d mask and %d observed values for %d values of x", len(in.Known), len(in.Observed), len(x))
	}
	lv, err := annealedLevels(sigmas, cfg)
	if err != nil {
		return err
	}
	return s.run(ctx, x, lv, cfg.Denoise, &in)
}

// inpaintBatch applies an Inpainting to one batch of the sampler: samples
// lo … lo+m−1 of x, held in the batch buffer.
type inpaintBatch struct {
	in      *Inpainting
	lo, m   int
	dim     int
	noisy   []float32 // ỹ of the current level, batch×dim
	known   []bool    // this batch's slice of in.Known
	observe []float32 // this batch's slice of in.Observed
}

func (b *inpaintBatch) reset(lo, m int) {
	b.lo, b.m = lo, m
	b.known = b.in.Known[lo*b.dim : (lo+m)*b.dim]
	b.observe = b.in.Observed[lo*b.dim : (lo+m)*b.dim]
}

// level draws ỹ = y + σ·z for level li. z is drawn for every value, known or
// not, so that a value's noise does not depend on the rest of the mask.
func (b *inpaintBatch) level(seed uint64, li int, sigma float64) {
	var r keyrand.Stream
	for k := 0; k < b.m; k++ {
		r.Reset(seed, inpaintTag, uint64(b.lo+k), uint64(li))
		for j := k * b.dim; j < (k+1)*b.dim; j++ {
			b.noisy[j] = b.observe[j] + float32(sigma*r.Norm())
		}
	}
}

// clamp sets the known values of xb to src (ỹ during the levels, y at the end).
func (b *inpaintBatch) clamp(xb, src []float32) {
	for j, k := range b.known {
		if k {
			xb[j] = src[j]
		}
	}
}
