package data

import (
	"fmt"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// Sampler fixes the global batch of every step from the seed alone: step s
// takes global positions s·B … (s+1)·B−1 of an endless sequence of epochs,
// each a permutation of the dataset drawn from keyrand.New(seed, tag, epoch).
// Worker r of W takes the contiguous positions Slice(r, W), so a step's
// examples (and everything keyed by their positions) do not depend on W.
//
// A Sampler is used by one goroutine at a time. It keeps the permutations of
// the two most recently used epochs, so consecutive steps, including one that
// straddles an epoch boundary, cost no allocation and at most one shuffle
// per epoch.
type Sampler struct {
	ds    Dataset
	batch int
	seed  uint64
	prep  Config // the per-example transforms of Prepare, and Flip
	shape []int
	size  int // float32 values per example

	rng   keyrand.Stream
	slots [2]epochPerm
	next  int // slot to overwrite next
}

type epochPerm struct {
	epoch uint64
	perm  []int // nil until first use
}

// NewSampler returns the sampler of global batch size globalBatch over ds.
// Fill applies cfg's per-example options: the random flip (data.flip), then
// Prepare (data.dequantize, data.centered). Their randomness comes from
// streams keyed by (seed, step, position), so it is reproducible like
// everything else. The other fields of cfg are not used.
func NewSampler(ds Dataset, globalBatch int, seed uint64, cfg Config) (*Sampler, error) {
	if ds == nil || ds.Len() <= 0 {
		return nil, fmt.Errorf("data: sampler over an empty dataset")
	}
	if globalBatch <= 0 {
		return nil, fmt.Errorf("train.global_batch: %d, want >= 1", globalBatch)
	}
	shape := ds.Shape()
	if (cfg.Flip || cfg.Centered) && len(shape) != 3 {
		return nil, fmt.Errorf("data: flip and centering need images, not examples of shape %v", shape)
	}
	return &Sampler{ds: ds, batch: globalBatch, seed: seed, prep: cfg, shape: shape, size: Size(ds)}, nil
}

// GlobalBatch is B.
func (s *Sampler) GlobalBatch() int { return s.batch }

// ExampleSize is the number of float32 values per example.
func (s *Sampler) ExampleSize() int { return s.size }

// Slice returns the batch positions [lo, hi) of worker rank among workers:
// contiguous, in rank order, sizes differing by at most one.
func (s *Sampler) Slice(rank, workers int) (lo, hi int, err error) {
	return Slice(s.batch, rank, workers)
}

// Slice splits a batch of size batch into workers contiguous, balanced
// parts and returns part rank as [lo, hi). It needs 1 ≤ workers ≤ batch so
// that every worker has at least one example.
func Slice(batch, rank, workers int) (lo, hi int, err error) {
	if workers < 1 || workers > batch {
		return 0, 0, fmt.Errorf("data: %d workers for a global batch of %d, want 1..%d", workers, batch, batch)
	}
	if rank < 0 || rank >= workers {
		return 0, 0, fmt.Errorf("data: rank %d of %d workers, want 0..%d", rank, workers, workers-1)
	}
	// 64-bit products: batch·workers may overflow int32 platforms' int.
	lo = int(int64(rank) * int64(batch) / int64(workers))
	hi = int(int64(rank+1) * int64(batch) / int64(workers))
	return lo, hi, nil
}

// Position is the global position of batch position j of step: step·B + j.
// It is the key the trainer uses for the example's noise.
func (s *Sampler) Position(step uint64, j int) uint64 {
	return step*uint64(s.batch) + uint64(j)
}

// Index is the dataset index at batch position j (0 ≤ j < B) of step.
func (s *Sampler) Index(step uint64, j int) int {
	pos := s.Position(step, j)
	n := uint64(s.ds.Len())
	return s.perm(pos / n)[pos%n]
}

// perm returns the permutation of epoch e, shuffling it into the least
// recently used slot if it is not cached.
func (s *Sampler) perm(e uint64) []int {
	for i := range s.slots {
		if sl := &s.slots[i]; sl.perm != nil && sl.epoch == e {
			s.next = 1 - i
			return sl.perm
		}
	}
	sl := &s.slots[s.next]
	if sl.perm == nil {
		sl.perm = make([]int, s.ds.Len())
	}
	s.rng.Reset(s.seed, tagPermutation, e)
	s.rng.Perm(sl.perm)
	sl.epoch = e
	s.next = 1 - s.next
	return sl.perm
}

// Fill writes the examples at batch positions [lo, hi) of step into dst,
// one after another; dst must hold exactly (hi−lo)·ExampleSize values.
func (s *Sampler) Fill(step uint64, lo, hi int, dst []float32) error {
	if lo < 0 || hi > s.batch || lo > hi {
		return fmt.Errorf("data: positions [%d, %d) outside the batch [0, %d)", lo, hi, s.batch)
	}
	if want := (hi - lo) * s.size; len(dst) != want {
		return fmt.Errorf("data: buffer of %d values for %d examples of %d, want %d", len(dst), hi-lo, s.size, want)
	}
	for j := lo; j < hi; j++ {
		x := dst[(j-lo)*s.size : (j-lo+1)*s.size]
		s.ds.Example(s.Index(step, j), x)
		pos := s.Position(step, j)
		if s.prep.Flip && flipped(&s.rng, s.seed, step, pos) {
			Flip(x, s.shape[0], s.shape[1], s.shape[2])
		}
		if s.prep.Dequantize { // the only transform that draws
			s.rng.Reset(s.seed, tagDequantize, step, pos)
		}
		s.prep.Prepare(x, &s.rng)
	}
	return nil
}
