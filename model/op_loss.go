package model

import (
	"gorgonia.org/gorgonia"
)

// dsmLoss adds the scalar Σ_b l_b with l_b = ½‖o_b + z_b‖², where o = σ·s(x̃, σ)
// is the network's raw output (s = o/σ, so σ·s is o itself). The per-sample
// losses land in losses (len batch) as a side effect.
func (b *builder[T]) dsmLoss(o, z *gorgonia.Node, losses []T) (*gorgonia.Node, error) {
	shape := o.Shape().Clone()
	bs := shape[0]
	d := prod(shape) / bs
	fwd := func(s []T, in [][]T) {
		o, z := in[0], in[1]
		var tot T
		for i := 0; i < bs; i++ {
			var l T
			ob, zb := o[i*d:(i+1)*d], z[i*d:(i+1)*d]
			for j, v := range ob {
				r := v + zb[j]
				l += r * r
			}
			losses[i] = l / 2
			tot += l / 2
		}
		s[0] = tot
	}
	return apply[T]("dsm", nil, nil, fwd, []bool{true, false},
		func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
			do, err := apply[T]("dsm.bwd", shape, nil, func(do []T, v [][]T) {
				o, z, g := v[0], v[1], v[2][0]
				for i, x := range o {
					do[i] = g * (x + z[i])
				}
			}, nil, nil, in[0], in[1], grad)
			return gorgonia.Nodes{do, nil}, err
		}, o, z)
}
