package model

import (
	"gorgonia.org/gorgonia"
)

// dsmLoss adds the scalar Σ_b l_b with l_b = w_b·½‖o_b + z_b‖², where o = σ·s(x̃, σ)
// is the network's raw output (s = o/σ, so σ·s is o itself) and w_b = σ_b^(p−2)
// turns NCSN's λ(σ) = σ² into σ^p. The per-sample losses land in losses (len
// batch) as a side effect.
func (b *builder[T]) dsmLoss(o, z *gorgonia.Node, weights, losses []T) (*gorgonia.Node, error) {
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
			li := weights[i] * (l / 2)
			losses[i] = li
			tot += li
		}
		s[0] = tot
	}
	return apply[T]("dsm", nil, nil, fwd, []bool{true, false},
		func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
			do, err := apply[T]("dsm.bwd", shape, nil, func(do []T, v [][]T) {
				o, z, g := v[0], v[1], v[2][0]
				for s := 0; s < bs; s++ {
					gw := g * weights[s]
					for i := s * d; i < (s+1)*d; i++ {
						do[i] = gw * (o[i] + z[i])
					}
				}
			}, nil, nil, in[0], in[1], grad)
			return gorgonia.Nodes{do, nil}, err
		}, o, z)
}

// fdssmLoss adds the scalar Σ_r L_r over P = batch/2 pairs of rows, row r
// being the network's raw output o₊ at x̃ + h·v and row P + r the output o₋ at
// x̃ − h·v for the pair's direction v (rows of v, in the graph's layout):
//
//	L_r = a_r·vᵀ(o₊ − o₋) + c_r·(vᵀ(o₊ + o₋))²
//
// with a_r = σ^(p−1)/(2hM) and c_r = σ^(p−2)/(8M) set by the caller for M
// particles per sample: σ^p/M·[vᵀ(s₊ − s₋)/(2h) + ½(vᵀ(s₊ + s₋)/2)²] with
// s = o/σ, the finite-difference SSM objective. Per-pair losses land in losses.
func (b *builder[T]) fdssmLoss(o, v *gorgonia.Node, a, c, losses []T) (*gorgonia.Node, error) {
	shape := o.Shape().Clone()
	P := shape[0] / 2
	d := prod(shape) / shape[0]
	// dots computes vᵀo₊ and vᵀo₋ of pair r.
	dots := func(o, v []T, r int) (T, T) {
		vr, op, om := v[r*d:(r+1)*d], o[r*d:(r+1)*d], o[(P+r)*d:(P+r+1)*d]
		var dp, dm T
		for j, x := range vr {
			dp += x * op[j]
			dm += x * om[j]
		}
		return dp, dm
	}
	fwd := func(s []T, in [][]T) {
		var tot T
		for r := 0; r < P; r++ {
			dp, dm := dots(in[0], in[1], r)
			u := dp + dm
			l := a[r]*(dp-dm) + c[r]*u*u
			losses[r] = l
			tot += l
		}
		s[0] = tot
	}
	return apply[T]("fdssm", nil, nil, fwd, []bool{true, false},
		func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
			// ∂L/∂o₊ = (a + 2c·u)·v, ∂L/∂o₋ = (−a + 2c·u)·v.
			do, err := apply[T]("fdssm.bwd", shape, nil, func(do []T, in [][]T) {
				o, v, g := in[0], in[1], in[2][0]
				for r := 0; r < P; r++ {
					dp, dm := dots(o, v, r)
					k := 2 * c[r] * (dp + dm)
					kp, km := g*(a[r]+k), g*(k-a[r])
					vr := v[r*d : (r+1)*d]
					dop, dom := do[r*d:(r+1)*d], do[(P+r)*d:(P+r+1)*d]
					for j, x := range vr {
						dop[j] = kp * x
						dom[j] = km * x
					}
				}
			}, nil, nil, in[0], in[1], grad)
			return gorgonia.Nodes{do, nil}, err
		}, o, v)
}
