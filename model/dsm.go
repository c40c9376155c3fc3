package model

import (
	"fmt"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// dsmTag separates the DSM noise streams from the seed's other uses.
const dsmTag = 0x64736d // "dsm"

// Noise draws the per-sample σ level and noise z (and, Project, the sliced
// estimators' directions) from streams keyed by (seed, step, global
// position): a sample's noise is the same whichever worker computes it.
type Noise struct {
	Seed   uint64
	Sigmas []float64
	rng    keyrand.Stream
}

// Draw fills level, sigma (n) and z (n×dim) for the global positions lo…lo+n−1 of step.
func (d *Noise) Draw(step uint64, lo int, level []int, sigma, z []float32) {
	n := len(level)
	dim := 0
	if n > 0 {
		dim = len(z) / n
	}
	for b := 0; b < n; b++ {
		d.rng.Reset(d.Seed, dsmTag, step, uint64(lo+b))
		i := d.rng.IntN(len(d.Sigmas))
		level[b], sigma[b] = i, float32(d.Sigmas[i])
		zb := z[b*dim : (b+1)*dim]
		for j := range zb {
			zb[j] = float32(d.rng.Norm())
		}
	}
}

// projTag separates the sliced estimators' directions from the σ and z draws,
// so adding them leaves DSM's noise as it was.
const projTag = 0x70726f6a // "proj"

// Project fills v with the directions of the sliced estimators for the n
// samples at global positions lo…lo+n−1 of step, len(v)/n values each
// (n_particles·D), from a stream keyed like Draw's: Rademacher ±1, or
// standard normal when gaussian is set.
func (d *Noise) Project(step uint64, lo, n int, gaussian bool, v []float32) {
	// dsm and esm take no directions: nothing to draw on their steps.
	if n <= 0 || len(v) == 0 {
		return
	}
	per := len(v) / n
	for b := 0; b < n; b++ {
		d.rng.Reset(d.Seed, projTag, step, uint64(lo+b))
		vb := v[b*per : (b+1)*per]
		for j := range vb {
			if gaussian {
				vb[j] = float32(d.rng.Norm())
			} else {
				vb[j] = float32(1 - 2*int(d.rng.Uint64()>>63))
			}
		}
	}
}

// LossStats are loss sums and sample counts per σ level, of the estimator's
// per-sample objective (DSM's loss, or e.g. SSM's, which may be negative).
// Flat is how they travel through the all-reduce next to the gradient:
// [sums..., counts...].
type LossStats struct {
	Sum   []float64
	Count []float64
}

// NewLossStats returns zeroed statistics for the given number of levels.
func NewLossStats(levels int) LossStats {
	return LossStats{Sum: make([]float64, levels), Count: make([]float64, levels)}
}

// Reset zeroes the statistics.
func (s LossStats) Reset() {
	clear(s.Sum)
	clear(s.Count)
}

// Add accounts per-sample losses at their levels.
func (s LossStats) Add(level []int, loss []float32) {
	for b, l := range level {
		s.Sum[l] += float64(loss[b])
		s.Count[l]++
	}
}

// Mean is the average loss over all counted samples.
func (s LossStats) Mean() float64 {
	var sum, n float64
	for i := range s.Sum {
		sum += s.Sum[i]
		n += s.Count[i]
	}
	if n == 0 {
		return 0
	}
	return sum / n
}

// PerLevel is the mean loss of each level (NaN-free: 0 where no sample fell).
func (s LossStats) PerLevel() []float64 {
	out := make([]float64, len(s.Sum))
	for i := range out {
		if s.Count[i] > 0 {
			out[i] = s.Sum[i] / s.Count[i]
		}
	}
	return out
}

// Put writes the statistics into dst (len 2·levels) as float32.
func (s LossStats) Put(dst []float32) {
	L := len(s.Sum)
	for i := 0; i < L; i++ {
		dst[i], dst[L+i] = float32(s.Sum[i]), float32(s.Count[i])
	}
}

// Get reads statistics written by Put (possibly summed across workers).
func (s LossStats) Get(src []float32) error {
	L := len(s.Sum)
	if len(src) != 2*L {
		return fmt.Errorf("model: loss stats: %d values, want %d", len(src), 2*L)
	}
	for i := 0; i < L; i++ {
		s.Sum[i], s.Count[i] = float64(src[i]), float64(src[L+i])
	}
	return nil
}
