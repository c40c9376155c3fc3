package model

import (
	"fmt"
	"math"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// ParamsOf holds every parameter of a network in one flat buffer, tensor i
// being Data[Offsets[i] : Offsets[i]+prod(Shapes[i])]. Names and shapes are
// PyTorch's (state_dict names and layouts of shared/bench/torch_ref.py), so a
// checkpoint's tensors mean the same thing to a PyTorch user.
type ParamsOf[T Float] struct {
	Names   []string
	Shapes  [][]int
	Offsets []int
	Data    []T
}

// Params is the float32 parameter buffer used for training.
type Params = ParamsOf[float32]

// Index returns the position of the named tensor, or -1.
func (p *ParamsOf[T]) Index(name string) int {
	for i, n := range p.Names {
		if n == name {
			return i
		}
	}
	return -1
}

// Tensor returns the named tensor's slice of Data.
func (p *ParamsOf[T]) Tensor(name string) ([]T, error) {
	i := p.Index(name)
	if i < 0 {
		return nil, fmt.Errorf("model: no parameter %q", name)
	}
	return p.Data[p.Offsets[i] : p.Offsets[i]+prod(p.Shapes[i])], nil
}

type paramKind uint8

const (
	kWeight paramKind = iota // U(±1/√fan_in): PyTorch's Linear/Conv2d default
	kBias                    // U(±1/√fan_in)
	kOnes                    // GroupNorm weight
	kZeros                   // GroupNorm bias
)

type pspec struct {
	name  string
	shape []int
	fanIn int
	kind  paramKind
}

// layout lays out the specs in order in one zeroed buffer.
func layout[T Float](specs []pspec) (*ParamsOf[T], []pspec) {
	p := &ParamsOf[T]{}
	off := 0
	for _, s := range specs {
		p.Names = append(p.Names, s.name)
		p.Shapes = append(p.Shapes, s.shape)
		p.Offsets = append(p.Offsets, off)
		off += prod(s.shape)
	}
	p.Data = make([]T, off)
	return p, specs
}

// initTag separates initialisation streams from the seed's other uses.
const initTag = 0x696e6974706172 // "initpar"

// initParams fills p like PyTorch's default initialisation. Every tensor draws
// from its own stream keyed by (seed, index), so the result depends on the
// seed alone.
func initParams[T Float](p *ParamsOf[T], specs []pspec, seed uint64) {
	var r keyrand.Stream
	for i, s := range specs {
		d := p.Data[p.Offsets[i] : p.Offsets[i]+prod(s.shape)]
		switch s.kind {
		case kOnes:
			for j := range d {
				d[j] = 1
			}
		case kZeros:
			clear(d)
		default:
			bound := 1 / math.Sqrt(float64(s.fanIn))
			r.Reset(seed, initTag, uint64(i))
			for j := range d {
				d[j] = T((2*r.Float64() - 1) * bound)
			}
		}
	}
}

func linearSpecs(name string, in, out int) []pspec {
	return []pspec{
		{name + ".weight", []int{out, in}, in, kWeight},
		{name + ".bias", []int{out}, in, kBias},
	}
}

func convSpecs(name string, ci, co int) []pspec {
	return []pspec{
		{name + ".weight", []int{co, ci, 3, 3}, ci * 9, kWeight},
		{name + ".bias", []int{co}, ci * 9, kBias},
	}
}

func gnSpecs(name string, c int) []pspec {
	return []pspec{
		{name + ".weight", []int{c}, c, kOnes},
		{name + ".bias", []int{c}, c, kZeros},
	}
}
