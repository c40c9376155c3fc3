package model

import (
	"math"

	"gorgonia.org/gorgonia"
)

func is32[T Float]() bool {
	var z T
	_, ok := any(z).(float32)
	return ok
}

// expBatch sets v[i] = e^v[i] in float32 to about 1 ulp: Cody–Waite range
// reduction and a degree-6 Taylor polynomial on |r| ≤ ln2/2, arguments clamped
// to [−87, 88]. A loop over a slice, because a per-value call would not be
// inlined and math.Exp in float64 costs several times more; SiLU and softplus
// run on every activation.
func expBatch(v []float32) {
	for i, x := range v {
		// Plain comparisons: the min and max built-ins order NaNs and
		// signed zeros, which costs branches on every value.
		if x < -87 {
			x = -87
		}
		if x > 88 {
			x = 88
		}
		// Adding and subtracting 1.5·2²³ rounds to the nearest integer.
		kf := (x*1.44269504088896341 + 12582912) - 12582912
		r := x - kf*0.693359375 - kf*(-2.12194440e-4)
		p := float32(1.0/720)*r + 1.0/120
		p = p*r + 1.0/24
		p = p*r + 1.0/6
		p = p*r + 0.5
		p = p*r + 1
		p = p*r + 1
		v[i] = p * math.Float32frombits(uint32(int32(kf)+127)<<23)
	}
}

// expf is e^x by expBatch.
func expf(x float32) float32 {
	v := [1]float32{x}
	expBatch(v[:])
	return v[0]
}

// log1p32 is log(1+t) for t in [0, 1] in float32: 2·atanh(s) with
// s = t/(2+t) ≤ 1/3, so small t keep full relative precision.
func log1p32(t float32) float32 {
	s := t / (2 + t)
	q := s * s
	p := float32(1.0/15)*q + 1.0/13
	p = p*q + 1.0/11
	p = p*q + 1.0/9
	p = p*q + 1.0/7
	p = p*q + 1.0/5
	p = p*q + 1.0/3
	p = p*q + 1
	return 2 * s * p
}

// sigmoid32 is 1/(1+e^−x) in float32 via expf.
func sigmoid32(x float32) float32 { return 1 / (1 + expf(-x)) }

func sigmoid64(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// siluRun: y = x·σ(x).
func siluRun[T Float](y []T, in [][]T) {
	x := in[0]
	if is32[T]() {
		y32, x32 := as[float32](y), as[float32](x)
		for i, v := range x32 {
			y32[i] = v * sigmoid32(v)
		}
		return
	}
	y64, x64 := as[float64](y), as[float64](x)
	for i, v := range x64 {
		y64[i] = v * sigmoid64(v)
	}
}

// siluBwdRun: dx = dy·σ(x)·(1 + x·(1−σ(x))); inputs x, dy.
func siluBwdRun[T Float](dx []T, in [][]T) {
	x, dy := in[0], in[1]
	for i, v := range x {
		var s T
		if is32[T]() {
			s = T(sigmoid32(float32(v)))
		} else {
			s = T(sigmoid64(float64(v)))
		}
		dx[i] = dy[i] * s * (1 + v*(1-s))
	}
}

// softplusRun: y = log(1+e^x) = max(x,0) + log1p(e^−|x|), also storing
// σ(x) = 1/(1+e^−x) in sig for the backward pass.
func softplusRun[T Float](sig []T) func(y []T, in [][]T) {
	return func(y []T, in [][]T) {
		x := in[0]
		if is32[T]() {
			x32, y32, s32 := as[float32](x), as[float32](y), as[float32](sig)
			for i, v := range x32 {
				s32[i] = -abs(v)
			}
			expBatch(s32)
			for i, v := range x32 {
				e := s32[i]
				if v >= 0 {
					y32[i] = v + log1p32(e)
					s32[i] = 1 / (1 + e)
				} else {
					y32[i] = log1p32(e)
					s32[i] = e / (1 + e)
				}
			}
			return
		}
		for i, v := range x {
			a := float64(v)
			y[i] = T(math.Max(a, 0) + math.Log1p(math.Exp(-math.Abs(a))))
			sig[i] = T(sigmoid64(a))
		}
	}
}

func abs[T Float](x T) T {
	if x < 0 {
		return -x
	}
	return x
}

// silu adds y = SiLU(x).
func (b *builder[T]) silu(name string, x *gorgonia.Node) (*gorgonia.Node, error) {
	shape := x.Shape().Clone()
	return apply[T](name, shape, nil, siluRun[T], []bool{true},
		func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
			dx, err := apply[T](name+".bwd", shape, nil, siluBwdRun[T], nil, nil, in[0], grad)
			return gorgonia.Nodes{dx}, err
		}, x)
}

// softplus adds y = softplus(x).
func (b *builder[T]) softplus(name string, x *gorgonia.Node) (*gorgonia.Node, error) {
	shape := x.Shape().Clone()
	sig := make([]T, prod(shape))
	return apply[T](name, shape, nil, softplusRun(sig), []bool{true},
		func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
			// dx = dy·σ(x), σ(x) left by the forward op of the same run.
			dx, err := apply[T](name+".bwd", shape, nil, func(dx []T, v [][]T) {
				for i, g := range v[0] {
					dx[i] = g * sig[i]
				}
			}, nil, nil, grad, out)
			return gorgonia.Nodes{dx}, err
		}, x)
}

// linear adds y = x·Wᵀ + b for x [B, in], W [out, in] (PyTorch's layout), b [out].
// needDx is false when x is data, so no input gradient is computed.
func (b *builder[T]) linear(name string, x *gorgonia.Node, out int, needDx bool) (*gorgonia.Node, error) {
	bs, in := x.Shape()[0], x.Shape()[1]
	w, bias := b.param(name+".weight"), b.param(name+".bias")
	fwd := func(y []T, v [][]T) {
		x, w, bias := v[0], v[1], v[2]
		for r := 0; r < bs; r++ {
			copy(y[r*out:(r+1)*out], bias)
		}
		gemmT(false, true, bs, out, in, 1, x, in, w, in, 1, y, out)
	}
	return apply[T](name, []int{bs, out}, nil, fwd, []bool{needDx, true, true},
		func(ins gorgonia.Nodes, y, grad *gorgonia.Node) (gorgonia.Nodes, error) {
			res := make(gorgonia.Nodes, 3)
			var err error
			if needDx {
				// dx = dy·W
				res[0], err = apply[T](name+".dx", []int{bs, in}, nil, func(dx []T, v [][]T) {
					gemmT(false, false, bs, in, out, 1, v[0], out, v[1], in, 0, dx, in)
				}, nil, nil, grad, ins[1])
				if err != nil {
					return nil, err
				}
			}
			// dW = dyᵀ·x
			res[1], err = apply[T](name+".dw", []int{out, in}, b.gradOf(name+".weight"), func(dw []T, v [][]T) {
				gemmT(true, false, out, in, bs, 1, v[0], out, v[1], in, 0, dw, in)
			}, nil, nil, grad, ins[0])
			if err != nil {
				return nil, err
			}
			res[2], err = apply[T](name+".db", []int{out}, b.gradOf(name+".bias"), func(db []T, v [][]T) {
				colSums(db, v[0], bs, out)
			}, nil, nil, grad)
			return res, err
		}, x, w, bias)
}

// colSums sets s[j] = Σ_i m[i, j] for a rows×cols row-major m.
func colSums[T Float](s, m []T, rows, cols int) {
	clear(s[:cols])
	for i := 0; i < rows; i++ {
		addTo(s[:cols], m[i*cols:(i+1)*cols])
	}
}

// addTo sets d += s elementwise.
func addTo[T Float](d, s []T) {
	s = s[:len(d)]
	for i := range d {
		d[i] += s[i]
	}
}
