package model

// Winograd convolution F(m×m, 3×3) (Lavin & Gray 2015) for the stride-1 3×3
// convolutions: an output tile of m×m pixels comes from an input tile of
// α×α = (m+2)×(m+2) pixels as Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A, so the α²
// products of one position ξ of the transformed tiles, over all tiles and
// channels, are one GEMM [tiles × Ci]·[Ci × Co]: α²/m² multiplications per
// output instead of 9 (F(2×2): 16/4, 2.25× fewer; F(4×4): 36/16, 4× fewer).
//
// Layouts: transformed tiles are "ξ-major", V[ξ][tile][channel], so each ξ
// is a row-major matrix for internal/gemm; transformed weights are
// U[ξ][co][ci]. Every transform is the same operation, out = L·in·Lᵀ per
// channel with channels contiguous, done by one routine per matrix L.
//
// Backward: with D = A·dY·Aᵀ (the adjoint of the output transform),
// dU[ξ] = Σ_tiles D[ξ]ᵀ·V[ξ] and dW = Gᵀ·dU·G; the input gradient of a
// tile is B·(D[ξ]·U[ξ])·Bᵀ, added into dx where the α×α input tiles overlap.

// winoSpec is one F(m×m, 3×3) algorithm: its matrices and transforms.
type winoSpec struct {
	name string
	m, a int // output tile m×m, input tile α×α = (m+2)×(m+2)
	// The transforms, out = L·in·Lᵀ:
	in  *xform // Bᵀ (α×α): input tile → V
	out *xform // Aᵀ (m×α): GEMM result → output tile
	dy  *xform // A (α×m): output gradient tile → D
	dx  *xform // B (α×α): Z → input gradient tile
	w   *xform // G (α×3): 3×3 kernel → U
	dw  *xform // Gᵀ (3×α): dU → 3×3 kernel gradient
}

// xform is out = L·in·Lᵀ for a p×q matrix L, applied channel by channel.
type xform struct {
	p, q int
	l    []float64 // row-major p×q
	// asm, when not nil, does float32 channels in blocks of lanes, for the
	// variants (bias | res<<1 | overlap<<2) whose bit is set in variants.
	asm      func(n int, in *float32, inRow, inCol int, out *float32, outRow, outCol int, bias, res *float32, overlap bool)
	lanes    int
	variants uint8
	// asm8, when not nil, is an 8-lane routine for a remainder of 8
	// channels (or more) after asm's blocks, with the same variants.
	asm8 func(n int, in *float32, inRow, inCol int, out *float32, outRow, outCol int, bias, res *float32, overlap bool)
}

func newXform(p, q int, l ...float64) *xform {
	if len(l) != p*q {
		panic("model: transform matrix has the wrong size")
	}
	return &xform{p: p, q: q, l: l}
}

// transpose returns the q×p matrix Lᵀ.
func (x *xform) transpose() *xform {
	t := make([]float64, len(x.l))
	for i := 0; i < x.p; i++ {
		for j := 0; j < x.q; j++ {
			t[j*x.p+i] = x.l[i*x.q+j]
		}
	}
	return newXform(x.q, x.p, t...)
}

// F(2×2, 3×3) at the points 0, 1, −1, ∞.
var wino2 = newWinoSpec("F(2x2,3x3)", 2,
	newXform(4, 4, // Bᵀ
		1, 0, -1, 0,
		0, 1, 1, 0,
		0, -1, 1, 0,
		0, 1, 0, -1),
	newXform(2, 4, // Aᵀ
		1, 1, 1, 0,
		0, 1, -1, -1),
	newXform(4, 3, // G
		1, 0, 0,
		0.5, 0.5, 0.5,
		0.5, -0.5, 0.5,
		0, 0, 1))

// F(4×4, 3×3) at the points 0, 1, −1, 2, −2, ∞.
var wino4 = newWinoSpec("F(4x4,3x3)", 4,
	newXform(6, 6, // Bᵀ
		4, 0, -5, 0, 1, 0,
		0, -4, -4, 1, 1, 0,
		0, 4, -4, -1, 1, 0,
		0, -2, -1, 2, 1, 0,
		0, 2, -1, -2, 1, 0,
		0, 4, 0, -5, 0, 1),
	newXform(4, 6, // Aᵀ
		1, 1, 1, 1, 1, 0,
		0, 1, -1, 2, -2, 0,
		0, 1, 1, 4, 4, 0,
		0, 1, -1, 8, -8, 1),
	newXform(6, 3, // G
		1.0/4, 0, 0,
		-1.0/6, -1.0/6, -1.0/6,
		-1.0/6, 1.0/6, -1.0/6,
		1.0/24, 1.0/12, 1.0/6,
		1.0/24, -1.0/12, 1.0/6,
		0, 0, 1))

func newWinoSpec(name string, m int, bt, at, g *xform) *winoSpec {
	s := &winoSpec{name: name, m: m, a: m + 2, in: bt, out: at, w: g}
	s.dy, s.dx, s.dw = at.transpose(), bt.transpose(), g.transpose()
	return s
}

// xformApply computes, for channels c < n and i, j < p,
//
//	out[i·outRow + j·outCol + c] = Σ_ab L[i][a]·L[j][b]·in[a·inRow + b·inCol + c]
//	                              (+ bias[c]) (+ res[i·outRow + j·outCol + c])
//
// over a, b < q, adding bias and res where they are not nil. With overlap,
// the first two rows and columns of out are added to instead of set: the
// input gradient's α×α tiles overlap their predecessors' there. Whole
// blocks of lanes channels go to the assembly (float32), the rest to the
// portable loop.
func xformApply[T Float](x *xform, n int, in []T, inRow, inCol int, out []T, outRow, outCol int, bias, res []T, overlap bool) {
	if n == 0 {
		return
	}
	// What the transform touches, checked once here for both paths.
	last := (x.p-1)*(outRow+outCol) + n - 1
	_, _ = in[(x.q-1)*(inRow+inCol)+n-1], out[last]
	if bias != nil {
		bias = bias[:n]
	}
	if res != nil {
		res = res[:last+1]
	}
	v := 0
	if bias != nil {
		v |= 1
	}
	if res != nil {
		v |= 2
	}
	if overlap {
		v |= 4
	}
	c0 := 0
	if is32[T]() && x.asm != nil && x.variants&(1<<v) != 0 {
		var b, r *float32
		if c0 = n / x.lanes * x.lanes; c0 > 0 {
			if bias != nil {
				b = &as[float32](bias)[0]
			}
			if res != nil {
				r = &as[float32](res)[0]
			}
			x.asm(c0, &as[float32](in)[0], inRow, inCol, &as[float32](out)[0], outRow, outCol, b, r, overlap)
		}
		if c8 := (n - c0) &^ 7; c8 > 0 && x.asm8 != nil {
			if bias != nil {
				b = &as[float32](bias)[c0]
			}
			if res != nil {
				r = &as[float32](res)[c0]
			}
			x.asm8(c8, &as[float32](in)[c0], inRow, inCol, &as[float32](out)[c0], outRow, outCol, b, r, overlap)
			c0 += c8
		}
	}
	if c0 < n {
		xformGo(x, c0, n, in, inRow, inCol, out, outRow, outCol, bias, res, overlap)
	}
}

// xformGo is xformApply's portable loop over channels [c0, c1).
func xformGo[T Float](x *xform, c0, c1 int, in []T, inRow, inCol int, out []T, outRow, outCol int, bias, res []T, overlap bool) {
	p, q := x.p, x.q
	var tmp, sum [36]T // p×q, then p×p; p, q ≤ 6
	l := x.l
	for c := c0; c < c1; c++ {
		for i := 0; i < p; i++ {
			for b := 0; b < q; b++ {
				var s T
				for a := 0; a < q; a++ {
					if k := l[i*q+a]; k != 0 {
						s += T(k) * in[a*inRow+b*inCol+c]
					}
				}
				tmp[i*q+b] = s
			}
		}
		for i := 0; i < p; i++ {
			for j := 0; j < p; j++ {
				var s T
				for b := 0; b < q; b++ {
					if k := l[j*q+b]; k != 0 {
						s += T(k) * tmp[i*q+b]
					}
				}
				sum[i*p+j] = s
			}
		}
		for i := 0; i < p; i++ {
			for j := 0; j < p; j++ {
				v := sum[i*p+j]
				o := i*outRow + j*outCol + c
				if bias != nil {
					v += bias[c]
				}
				if res != nil {
					v += res[o]
				}
				if overlap && (i < 2 || j < 2) {
					v += out[o]
				}
				out[o] = v
			}
		}
	}
}

// addVec sets dst = a + b (dst may be a).
func addVec[T Float](dst, a, b []T) {
	n := len(dst)
	a, b = a[:n], b[:n]
	c0 := 0
	if is32[T]() && vecAdd != nil && n >= vecAddLanes {
		c0 = n / vecAddLanes * vecAddLanes
		vecAdd(c0, &as[float32](dst)[0], &as[float32](a)[0], &as[float32](b)[0])
	}
	for i := c0; i < n; i++ {
		dst[i] = a[i] + b[i]
	}
}

// vecAdd, when not nil, is addVec for float32 and n a multiple of vecAddLanes.
var (
	vecAdd      func(n int, dst, a, b *float32)
	vecAddLanes int
)
