package model

import (
	"gorgonia.org/gorgonia"
)

// siluBlock is how many values siluWide hands expBatch at a time: one
// block of scratch stays in L1 next to the values it is computed from.
const siluBlock = 2048

// siluWide adds y = SiLU(x) for activations the size of an image batch (the
// classifier's un-normalised first layer): split over the batch across
// goroutines, e^−x computed in blocks by expBatch, and σ(x) kept for the
// backward pass instead of recomputed. silu evaluates one value at a time,
// which suits the U-Net's small σ embedding but not whole feature maps.
func (b *builder[T]) siluWide(name string, x *gorgonia.Node) (*gorgonia.Node, error) {
	shape := x.Shape().Clone()
	bs := shape[0]
	per := prod(shape) / bs
	sig := make([]T, prod(shape))
	nw := b.ws.nw
	fwd := func(y []T, in [][]T) {
		x := in[0]
		parallel(bs, nw, func(_, lo, hi int) {
			xs, ys, ss := x[lo*per:hi*per], y[lo*per:hi*per], sig[lo*per:hi*per]
			if !is32[T]() {
				for i, v := range xs {
					s := T(sigmoid64(float64(v)))
					ss[i], ys[i] = s, v*s
				}
				return
			}
			x32, y32, s32 := as[float32](xs), as[float32](ys), as[float32](ss)
			for o := 0; o < len(x32); o += siluBlock {
				xb, yb, sb := x32[o:min(o+siluBlock, len(x32))], y32[o:min(o+siluBlock, len(x32))], s32[o:min(o+siluBlock, len(x32))]
				for i, v := range xb {
					sb[i] = -v
				}
				expBatch(sb)
				for i, v := range xb {
					s := 1 / (1 + sb[i])
					sb[i], yb[i] = s, v*s
				}
			}
		})
	}
	diff := func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
		// dx = dy·σ(x)·(1 + x·(1−σ(x))), σ(x) left by the forward op of the
		// same run (out is an input only to order this after it).
		dx, err := apply[T](name+".bwd", shape, nil, func(dx []T, v [][]T) {
			x, dy := v[0], v[1]
			parallel(bs, nw, func(_, lo, hi int) {
				for i := lo * per; i < hi*per; i++ {
					s := sig[i]
					dx[i] = dy[i] * s * (1 + x[i]*(1-s))
				}
			})
		}, nil, nil, in[0], grad, out)
		return gorgonia.Nodes{dx}, err
	}
	return apply[T](name, shape, nil, fwd, []bool{true}, diff, x)
}
