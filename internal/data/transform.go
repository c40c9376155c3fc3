package data

import (
	"fmt"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// tagFlip keys the random horizontal flip, apart from dequantization's stream.
const tagFlip uint64 = 0x6e63736e_666c6970 // "ncsnflip"

// Prepare turns one example, as Dataset.Example wrote it, into what the
// model sees, in place: uniform dequantization drawn from r (data.dequantize),
// then centring to [−1, 1] (data.centered). It is NCSNv2's data_transform;
// training and held-out evaluation both call it, each keying r its own way
// (training by (seed, step, position)). r is not used without dequantization.
// The random flip is an augmentation of training alone: Sampler.Fill does it.
func (c Config) Prepare(x []float32, r *keyrand.Stream) {
	if c.Dequantize {
		Dequantize(x, r)
	}
	c.Centre(x)
}

// Centre maps values in [0, 1] to the model's space in place: 2x − 1 when
// data.centered, unchanged otherwise. Restore undoes it.
func (c Config) Centre(x []float32) {
	if c.Centered {
		for i, v := range x {
			x[i] = 2*v - 1
		}
	}
}

// Restore maps values from the model's space back to the data's: it undoes
// the centring, so samples are in [0, 1] (about: Langevin samples may stray
// a little outside) when they are written or scored.
func (c Config) Restore(x []float32) {
	if c.Centered {
		for i, v := range x {
			x[i] = (v + 1) / 2
		}
	}
}

// Range is the interval image values span in the model's space: [0, 1], or
// [−1, 1] when centred. The samplers start from a uniform draw over it.
func (c Config) Range() (lo, hi float64) {
	if c.Centered {
		return -1, 1
	}
	return 0, 1
}

// Flip mirrors an image of shape [ch, h, w] (channel-first) left to right in place.
func Flip(x []float32, ch, h, w int) {
	for row := 0; row < ch*h; row++ {
		r := x[row*w : (row+1)*w]
		for i, j := 0, w-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
	}
}

// flipped tells whether the example at a global position of step is mirrored:
// a fair coin from a stream keyed by (seed, step, position), so every worker
// that computes the example flips it the same way.
func flipped(r *keyrand.Stream, seed, step, pos uint64) bool {
	r.Reset(seed, tagFlip, step, pos)
	return r.Uint64()&1 == 1
}

// tagSubsample keys the choice of examples that Subsample takes.
const tagSubsample uint64 = 0x6e63736e_73756273 // "ncsnsubs"

// Subsample returns n examples of ds (all of them if it has no more than n),
// chosen without replacement by a permutation keyed by seed alone, one after
// another in x, and their indices in ds.
func Subsample(ds Dataset, n int, seed uint64) (x []float32, idx []int, err error) {
	if ds == nil || ds.Len() == 0 || n < 1 {
		return nil, nil, fmt.Errorf("data: subsample of %d examples from an empty dataset", n)
	}
	perm := make([]int, ds.Len())
	keyrand.New(seed, tagSubsample).Perm(perm)
	idx = perm[:min(n, len(perm))]
	size := Size(ds)
	x = make([]float32, len(idx)*size)
	for k, i := range idx {
		ds.Example(i, x[k*size:(k+1)*size])
	}
	return x, idx, nil
}
