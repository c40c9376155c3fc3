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

// expf is exp for float32 to about 1 ulp: Cody–Waite range reduction and a
// degree-6 Taylor polynomial on |r| ≤ ln2/2. math.Exp in float64 costs several
// times more and SiLU runs on every activation of the U-Net.
func expf(x float32) float32 {
	if x > 88 {
		return float32(math.Inf(1))
	}
	if x < -87 {
		return 0
	}
	t := x * 1.44269504088896341
	var k int32
	if t >= 0 {
		k = int32(t + 0.5)
	} else {
		k = int32(t - 0.5)
	}
	kf := float32(k)
	r := x - kf*0.693359375 - kf*(-2.12194440e-4)
	p := float32(1.0/720)*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	return p * math.Float32frombits(uint32(k+127)<<23)
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

// softplusRun: y = log(1+e^x), computed as max(x,0) + log1p(e^−|x|).
func softplusRun[T Float](y []T, in [][]T) {
	for i, v := range in[0] {
		a := float64(v)
		y[i] = T(math.Max(a, 0) + math.Log1p(math.Exp(-math.Abs(a))))
	}
}

// softplusBwdRun: dx = dy·σ(x), with σ(x) = 1 − e^−y taken from the output y
// so the input need not stay live; inputs y, dy.
func softplusBwdRun[T Float](dx []T, in [][]T) {
	y, dy := in[0], in[1]
	for i, v := range y {
		dx[i] = dy[i] * T(-math.Expm1(-float64(v)))
	}
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
	return apply[T](name, shape, nil, softplusRun[T], []bool{true},
		func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
			dx, err := apply[T](name+".bwd", shape, nil, softplusBwdRun[T], nil, nil, out, grad)
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
