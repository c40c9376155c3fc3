package model

import (
	"math"

	"gorgonia.org/gorgonia"
)

const gnEps = 1e-5

// gnState is what a GroupNorm+SiLU forward op leaves for its backward op in
// the same run.
type gnState[T Float] struct {
	B, P, C, G int // batch, pixels, channels, groups
	mean, rstd []T // [B, G]
	// sig is σ(u) for every value, u the normalised, affine value, kept for
	// the backward op; nil in a graph without one, where each worker writes
	// one sample's σ(u) into its scratch in sigOne instead.
	sig    []T
	sigOne [][]T
	dg, db [][]T
	tmp    [][]T // per worker [4·C] scratch
}

// gnsilu adds y = SiLU(GroupNorm_G(x)·γ + β) for NHWC x [B, H, W, C]
// (PyTorch's GroupNorm: biased variance, ε = 1e-5).
func (b *builder[T]) gnsilu(name string, x *gorgonia.Node, groups int) (*gorgonia.Node, error) {
	xs := x.Shape().Clone()
	c := xs[3]
	groups = min(groups, c)
	st := &gnState[T]{B: xs[0], P: xs[1] * xs[2], C: c, G: groups}
	st.mean, st.rstd = make([]T, st.B*groups), make([]T, st.B*groups)
	nw := b.ws.nw
	st.tmp, st.sigOne = make([][]T, nw), make([][]T, nw)
	for i := range st.tmp {
		st.tmp[i] = make([]T, 4*c)
		st.sigOne[i] = make([]T, st.P*c)
	}
	fwd := func(y []T, in [][]T) {
		parallel(st.B, nw, func(w, lo, hi int) {
			for s := lo; s < hi; s++ {
				var sig []T
				if st.sig != nil {
					sig = st.sig[s*st.P*c : (s+1)*st.P*c]
				} else {
					sig = st.sigOne[w]
				}
				gnForward(st, s, in[0], in[1], in[2], y, sig, st.tmp[w])
			}
		})
	}
	diff := func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
		st.sig, st.sigOne = make([]T, prod(xs)), nil
		st.dg, st.db = make([][]T, nw), make([][]T, nw)
		for i := 0; i < nw; i++ {
			st.dg[i], st.db[i] = make([]T, c), make([]T, c)
		}
		dgamma, dbeta := b.gradOf(name+".weight"), b.gradOf(name+".bias")
		bwd := func(dx []T, v [][]T) {
			parallel(st.B, nw, func(w, lo, hi int) {
				clear(st.dg[w])
				clear(st.db[w])
				for s := lo; s < hi; s++ {
					gnBackward(st, s, v[0], v[1], v[2], v[3], dx, st.dg[w], st.db[w], st.tmp[w])
				}
			})
			copy(dgamma, st.dg[0])
			copy(dbeta, st.db[0])
			for w := 1; w < nw; w++ {
				addTo(dgamma, st.dg[w])
				addTo(dbeta, st.db[w])
			}
		}
		dx, err := apply[T](name+".bwd", xs, nil, bwd, nil, nil, in[0], in[1], in[2], grad)
		if err != nil {
			return nil, err
		}
		nop := func([]T, [][]T) {}
		dg, err := apply[T](name+".dweight", []int{c}, dgamma, nop, nil, nil, dx)
		if err != nil {
			return nil, err
		}
		db, err := apply[T](name+".dbias", []int{c}, dbeta, nop, nil, nil, dx)
		return gorgonia.Nodes{dx, dg, db}, err
	}
	return apply[T](name, xs, nil, fwd, []bool{true, true, true}, diff, x, b.param(name+".weight"), b.param(name+".bias"))
}

// gnStats sets the mean and 1/std of sample s's groups.
func gnStats[T Float](st *gnState[T], s int, x, tmp []T) {
	p, c, g := st.P, st.C, st.G
	cg := c / g
	n := float64(p * cg)
	xs := x[s*p*c : (s+1)*p*c]
	sum := tmp[:c]
	clear(sum)
	if !is32[T]() || !colSum32(as[float32](xs), as[float32](sum), c) {
		for i := 0; i < p; i++ {
			addTo(sum, xs[i*c:(i+1)*c])
		}
	}
	mean := tmp[c : 2*c] // per channel: its group's mean
	for k := 0; k < g; k++ {
		var t float64
		for j := k * cg; j < (k+1)*cg; j++ {
			t += float64(sum[j])
		}
		m := t / n
		st.mean[s*g+k] = T(m)
		for j := k * cg; j < (k+1)*cg; j++ {
			mean[j] = T(m)
		}
	}
	// Second pass on centred values: no cancellation for large means.
	clear(sum)
	if !is32[T]() || !colSqDev32(as[float32](xs), as[float32](mean), as[float32](sum), c) {
		for i := 0; i < p; i++ {
			row := xs[i*c : (i+1)*c]
			for j, v := range row {
				d := v - mean[j]
				sum[j] += d * d
			}
		}
	}
	for k := 0; k < g; k++ {
		var t float64
		for j := k * cg; j < (k+1)*cg; j++ {
			t += float64(sum[j])
		}
		st.rstd[s*g+k] = T(1 / math.Sqrt(t/n+gnEps))
	}
}

// gnAffine sets per-channel a, d with u = a·x + d for sample s.
func gnAffine[T Float](st *gnState[T], s int, gamma, beta, a, d []T) {
	cg := st.C / st.G
	for j := 0; j < st.C; j++ {
		k := s*st.G + j/cg
		a[j] = gamma[j] * st.rstd[k]
		d[j] = beta[j] - a[j]*st.mean[k]
	}
}

// gnForward computes sample s into y, and σ(u) of its values into sg.
func gnForward[T Float](st *gnState[T], s int, x, gamma, beta, y, sg, tmp []T) {
	c, p := st.C, st.P
	gnStats(st, s, x, tmp)
	a, d := tmp[2*c:3*c], tmp[3*c:4*c]
	gnAffine(st, s, gamma, beta, a, d)
	lo, hi := s*p*c, (s+1)*p*c
	xs, ys := x[lo:hi], y[lo:hi]
	if is32[T]() {
		// u into y, −u into sig, e^−u by one expBatch, then σ(u) = 1/(1+e^−u).
		x32, y32, s32, a32, d32 := as[float32](xs), as[float32](ys), as[float32](sg), as[float32](a), as[float32](d)
		if gnSilu32(x32, a32, d32, y32, s32, c) {
			return
		}
		for i := 0; i < p; i++ {
			xr, yr, sr := x32[i*c:(i+1)*c], y32[i*c:(i+1)*c], s32[i*c:(i+1)*c]
			for j, v := range xr {
				u := a32[j]*v + d32[j]
				yr[j] = u
				sr[j] = -u
			}
		}
		expBatch(s32)
		for i, e := range s32 {
			q := 1 / (1 + e)
			s32[i] = q
			y32[i] *= q
		}
		return
	}
	for i := 0; i < p; i++ {
		xr, yr, sr := xs[i*c:(i+1)*c], ys[i*c:(i+1)*c], sg[i*c:(i+1)*c]
		for j, v := range xr {
			u := a[j]*v + d[j]
			q := T(sigmoid64(float64(u)))
			sr[j] = q
			yr[j] = u * q
		}
	}
}

// gnBackward: du = dy·σ(u)·(1 + u·(1−σ(u))); dγ += Σ du·x̂, dβ += Σ du;
// dx = rstd·(γ·du − mean_g(γ·du) − x̂·mean_g(γ·du·x̂)).
func gnBackward[T Float](st *gnState[T], s int, x, gamma, beta, dy, dx, dg, db, tmp []T) {
	c, p, g := st.C, st.P, st.G
	cg := c / g
	a, d := tmp[2*c:3*c], tmp[3*c:4*c]
	gnAffine(st, s, gamma, beta, a, d)
	lo, hi := s*p*c, (s+1)*p*c
	xs, dys, dxs, sg := x[lo:hi], dy[lo:hi], dx[lo:hi], st.sig[lo:hi]
	s1, s2 := tmp[:c], tmp[c:2*c] // Σ du and Σ du·x̂ per channel
	clear(s1)
	clear(s2)
	// Σ du·x̂ = rstd·(Σ du·x − μ·Σ du): accumulate Σ du·x, not x̂.
	if !is32[T]() || !gnDu32(as[float32](xs), as[float32](dys), as[float32](sg), as[float32](a), as[float32](d), as[float32](dxs), as[float32](s1), as[float32](s2), c) {
		for i := 0; i < p; i++ {
			xr, dyr, dur, sr := xs[i*c:(i+1)*c], dys[i*c:(i+1)*c], dxs[i*c:(i+1)*c], sg[i*c:(i+1)*c]
			for j, v := range xr {
				u := a[j]*v + d[j]
				q := sr[j]
				du := dyr[j] * q * (1 + u*(1-q))
				dur[j] = du
				s1[j] += du
				s2[j] += du * v
			}
		}
	}
	for k := 0; k < g; k++ {
		m, r := st.mean[s*g+k], st.rstd[s*g+k]
		var m1, m2 float64
		for j := k * cg; j < (k+1)*cg; j++ {
			sx := r * (s2[j] - m*s1[j]) // Σ du·x̂
			dg[j] += sx
			db[j] += s1[j]
			m1 += float64(gamma[j] * s1[j])
			m2 += float64(gamma[j] * sx)
		}
		n := float64(p * cg)
		m1 /= n
		m2 /= n
		// Per channel: dx = rstd·γ·du − rstd·m1 − rstd·m2·x̂, with x̂ = (x−μ)·rstd,
		// as dx = A·du + Bc·x + Cc.
		for j := k * cg; j < (k+1)*cg; j++ {
			a[j] = r * gamma[j]
			d[j] = T(-float64(r) * float64(r) * m2)                          // coefficient of x
			tmp[j] = T(-float64(r)*m1 + float64(r)*float64(r)*m2*float64(m)) // constant
		}
	}
	if is32[T]() && gnDx32(as[float32](xs), as[float32](a), as[float32](d), as[float32](tmp[:c]), as[float32](dxs), c) {
		return
	}
	for i := 0; i < p; i++ {
		xr, dur := xs[i*c:(i+1)*c], dxs[i*c:(i+1)*c]
		for j, v := range xr {
			dur[j] = a[j]*dur[j] + d[j]*v + tmp[j]
		}
	}
}
