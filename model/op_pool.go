package model

import (
	"gorgonia.org/gorgonia"
)

// meanPool adds y[b, c] = mean over pixels of x[b, h, w, c]: global average
// pooling of NHWC activations. gorgonia's GlobalAveragePool2D has no gradient
// (see shared/notes/gorgonia.md), hence this op.
func (b *builder[T]) meanPool(name string, x *gorgonia.Node) (*gorgonia.Node, error) {
	xs := x.Shape().Clone()
	bs, p, c := xs[0], xs[1]*xs[2], xs[3]
	inv := 1 / T(p)
	fwd := func(y []T, in [][]T) {
		x := in[0]
		for s := 0; s < bs; s++ {
			ys := y[s*c : (s+1)*c]
			colSums(ys, x[s*p*c:(s+1)*p*c], p, c)
			for j := range ys {
				ys[j] *= inv
			}
		}
	}
	diff := func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
		dx, err := apply[T](name+".bwd", xs, nil, func(dx []T, v [][]T) {
			dy := v[0]
			for s := 0; s < bs; s++ {
				g := dy[s*c : (s+1)*c]
				for q := 0; q < p; q++ {
					row := dx[(s*p+q)*c : (s*p+q+1)*c]
					for j, v := range g {
						row[j] = v * inv
					}
				}
			}
		}, nil, nil, grad)
		return gorgonia.Nodes{dx}, err
	}
	return apply[T](name, []int{bs, c}, nil, fwd, []bool{true}, diff, x)
}
