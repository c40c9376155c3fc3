package data

import (
	"fmt"
	"math"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// Dataset is a finite, indexable set of examples of one shape.
// Implementations are safe for concurrent use unless they say otherwise.
type Dataset interface {
	// Len is the number of examples.
	Len() int
	// Shape is the per-example shape: [D] for points, [C, H, W] for images.
	Shape() []int
	// Example writes example i, flattened row-major (images channel-first),
	// into dst, whose length must be the product of Shape. The same i always
	// gives the same values. It panics if i is out of range, like indexing.
	Example(i int, dst []float32)
}

// Size is the number of float32 values in one example of ds.
func Size(ds Dataset) int {
	n := 1
	for _, d := range ds.Shape() {
		n *= d
	}
	return n
}

// Stream tags keep this package's keyed streams apart from every other use of
// the run seed (the trainer keys its noise by (seed, step, position)).
const (
	tagPermutation uint64 = 0x6e63736e_7065726d // "ncsnperm"
	tagDequantize  uint64 = 0x6e63736e_64657175 // "ncsndequ"
	tagExample     uint64 = 0x6e63736e_6578616d // "ncsnexam"
)

// Split tells a generated set's train and held-out examples apart: it is part
// of every example's key, so the two never share an example.
type Split uint64

const (
	Train Split = 0
	Test  Split = 1
)

// Open builds the train and held-out sets that cfg describes, after filling
// defaults and validating. Generated sets are drawn from seed; file sets
// ignore it. test is nil only when a file set's folder has no test files at
// all (a train-only copy); a half-present test split is an error.
func Open(cfg Config, seed uint64) (train, test Dataset, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	switch cfg.Name {
	case NameGMM:
		g, err := NewGMM(cfg.Means, cfg.Weights, cfg.Std)
		if err != nil {
			return nil, nil, err
		}
		return g.Sample(seed, Train, cfg.TrainSize), g.Sample(seed, Test, cfg.TestSize), nil
	case NameRings, NameMoons, NameCheckerboard:
		return newToy(cfg.Name, cfg.Std, seed, Train, cfg.TrainSize),
			newToy(cfg.Name, cfg.Std, seed, Test, cfg.TestSize), nil
	case NameSynthetic:
		return NewSynthetic(cfg.ImageSize, cfg.Channels, seed, Train, cfg.TrainSize),
			NewSynthetic(cfg.ImageSize, cfg.Channels, seed, Test, cfg.TestSize), nil
	case NameMNIST, NameFashionMNIST:
		return images(openMNIST(cfg))
	case NameCIFAR10:
		return images(openCIFAR(cfg))
	}
	return nil, nil, fmt.Errorf("data.name: unknown dataset %q", cfg.Name)
}

// Dequantize spreads each pixel of x, a multiple of 1/255 in [0, 1], uniformly
// over its 8-bit bin: x·255/256 + u/256 with u ~ U(0, 1) from r, so the result
// stays in [0, 1]. Callers key r by (seed, step, position) so that it is
// reproducible wherever the example is computed.
func Dequantize(x []float32, r *keyrand.Stream) {
	for i, v := range x {
		// Rounding recovers the exact 8-bit level from the float32 value.
		level := math.Round(float64(v) * 255)
		x[i] = float32((level + r.Float64()) / 256)
	}
}

// images converts file sets to Datasets, keeping an absent test split a nil
// interface rather than an interface holding a nil pointer.
func images(train, test *Images, err error) (Dataset, Dataset, error) {
	if err != nil {
		return nil, nil, err
	}
	if test == nil {
		return train, nil, nil
	}
	return train, test, nil
}
