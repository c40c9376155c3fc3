package data

import (
	"fmt"
	"math"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// Synthetic is a generated image set that needs no files: each image is one
// disc, square or bar of a random position, size and intensity (and, with 3
// channels, colour) on a black background. A small U-Net learns it in minutes
// and its samples are easy to judge by eye. Example i is drawn from a stream
// keyed by (seed, split, i). Pixels are multiples of 1/255, like 8-bit data,
// so dequantisation means the same thing as for the file sets.
type Synthetic struct {
	size, channels, n int
	seed              uint64
	split             Split
}

// NewSynthetic is a set of n images of channels×size×size.
// size must be in 8..256 and channels 1 or 3 (Config.Validate checks both).
func NewSynthetic(size, channels int, seed uint64, split Split, n int) *Synthetic {
	return &Synthetic{size: size, channels: channels, n: n, seed: seed, split: split}
}

func (s *Synthetic) Len() int     { return s.n }
func (s *Synthetic) Shape() []int { return []int{s.channels, s.size, s.size} }

// Shape kinds.
const (
	shapeDisc = iota
	shapeSquare
	shapeBar
	numShapes
)

// palette holds the colours of 3-channel images: primaries, secondaries, white.
var palette = [...][3]float64{
	{1, 0, 0}, {0, 1, 0}, {0, 0, 1},
	{1, 1, 0}, {0, 1, 1}, {1, 0, 1},
	{1, 1, 1},
}

func (s *Synthetic) Example(i int, dst []float32) {
	if i < 0 || i >= s.n {
		panic(fmt.Sprintf("data: synthetic example %d out of range [0, %d)", i, s.n))
	}
	var r keyrand.Stream
	r.Reset(s.seed, tagExample, uint64(s.split), uint64(i))

	n := float64(s.size)
	kind := r.IntN(numShapes)
	// Half-extents along x and y, in pixels.
	var hx, hy float64
	switch kind {
	case shapeDisc, shapeSquare:
		hx = n * (0.12 + 0.13*r.Float64())
		hy = hx
	case shapeBar:
		long := n * (0.25 + 0.15*r.Float64())
		thick := max(1, n*(0.05+0.04*r.Float64()))
		hx, hy = long, thick
		if r.IntN(2) == 1 {
			hx, hy = hy, hx
		}
	}
	// Centre such that the shape lies inside the image.
	cx := hx + (n-2*hx)*r.Float64()
	cy := hy + (n-2*hy)*r.Float64()
	level := 0.5 + 0.5*r.Float64()
	colour := [3]float64{1, 1, 1}
	if s.channels == 3 {
		colour = palette[r.IntN(len(palette))]
	}
	var on [3]float32
	for c := range s.channels {
		on[c] = float32(math.Round(255*level*colour[c])) / 255
	}

	plane := s.size * s.size
	dst = dst[:s.channels*plane]
	for y := range s.size {
		dy := float64(y) + 0.5 - cy
		for x := range s.size {
			dx := float64(x) + 0.5 - cx
			var in bool
			switch kind {
			case shapeDisc:
				in = dx*dx+dy*dy <= hx*hx
			default:
				in = math.Abs(dx) <= hx && math.Abs(dy) <= hy
			}
			for c := range s.channels {
				v := float32(0)
				if in {
					v = on[c]
				}
				dst[c*plane+y*s.size+x] = v
			}
		}
	}
}
