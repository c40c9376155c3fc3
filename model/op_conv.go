package model

import (
	"unsafe"

	"gorgonia.org/gorgonia"
)

// colBudget bounds one worker's im2col matrix (values): big enough for long
// GEMMs, small enough to stay in cache next to the weights.
const colBudget = 1 << 19

// convGeom is a 3×3, padding 1 convolution on NHWC activations. The column
// matrix has one row per output pixel and K = 9·Ci columns ordered (ky, kx, ci),
// so the three taps of a kernel row are one contiguous run of 3·Ci input values.
type convGeom struct {
	B, H, W, Ci, Co, S, Ho, Wo, K int
	nb                            int // samples per im2col chunk
}

func newConvGeom(b, h, w, ci, co, s int) convGeom {
	g := convGeom{B: b, H: h, W: w, Ci: ci, Co: co, S: s, Ho: (h-1)/s + 1, Wo: (w-1)/s + 1, K: 9 * ci}
	// Stride 1 backward also takes dy's columns (9·Co wide) for dx.
	g.nb = max(1, colBudget/(g.Ho*g.Wo*max(g.K, 9*co)))
	return g
}

// im2col writes the column rows of samples [b0, b1) of x.
func im2col[T Float](g *convGeom, x, col []T, b0, b1 int) {
	ci, w, k := g.Ci, g.W, g.K
	r := 0
	for b := b0; b < b1; b++ {
		xb := x[b*g.H*w*ci : (b+1)*g.H*w*ci]
		for oy := 0; oy < g.Ho; oy++ {
			for ox := 0; ox < g.Wo; ox++ {
				row := col[r*k : (r+1)*k]
				r++
				ix0 := ox*g.S - 1
				for ky := 0; ky < 3; ky++ {
					seg := row[ky*3*ci : (ky+1)*3*ci]
					iy := oy*g.S + ky - 1
					if iy < 0 || iy >= g.H {
						clear(seg)
						continue
					}
					base := iy * w * ci
					if ix0 >= 0 && ix0+2 < w {
						copy(seg, xb[base+ix0*ci:base+(ix0+3)*ci])
						continue
					}
					for kx := 0; kx < 3; kx++ {
						s := seg[kx*ci : (kx+1)*ci]
						if ix := ix0 + kx; ix < 0 || ix >= w {
							clear(s)
						} else {
							copy(s, xb[base+ix*ci:base+(ix+1)*ci])
						}
					}
				}
			}
		}
	}
}

// col2im adds the column rows of samples [b0, b1) into dx (the adjoint of im2col).
func col2im[T Float](g *convGeom, col, dx []T, b0, b1 int) {
	ci, w, k := g.Ci, g.W, g.K
	r := 0
	for b := b0; b < b1; b++ {
		xb := dx[b*g.H*w*ci : (b+1)*g.H*w*ci]
		for oy := 0; oy < g.Ho; oy++ {
			for ox := 0; ox < g.Wo; ox++ {
				row := col[r*k : (r+1)*k]
				r++
				ix0 := ox*g.S - 1
				for ky := 0; ky < 3; ky++ {
					iy := oy*g.S + ky - 1
					if iy < 0 || iy >= g.H {
						continue
					}
					seg := row[ky*3*ci : (ky+1)*3*ci]
					base := iy * w * ci
					if ix0 >= 0 && ix0+2 < w {
						addTo(xb[base+ix0*ci:base+(ix0+3)*ci], seg)
						continue
					}
					for kx := 0; kx < 3; kx++ {
						if ix := ix0 + kx; ix >= 0 && ix < w {
							addTo(xb[base+ix*ci:base+(ix+1)*ci], seg[kx*ci:(kx+1)*ci])
						}
					}
				}
			}
		}
	}
}

// convState is what a convolution's forward op leaves for its backward op in
// the same run: the weights permuted to the column order, and per-worker
// gradient accumulators.
type convState[T Float] struct {
	g        convGeom
	fwd, bwd convAlgo     // the algorithms of the forward and the backward op
	wf, wb   *winoConv[T] // their Winograd states (nil for direct)
	wk       []T          // [Co, K], (ky, kx, ci) order
	// gen counts the times wk changed: what is made from it (Winograd's U, packed
	// operands, wt) is made again only then. Sampling runs one set of weights for a
	// thousand steps, and the backward follows its forward with the same weights.
	gen   uint64
	wtGen uint64 // the gen wt was flipped at
	wt    []T    // [Ci, 9·Co]: wk flipped and transposed, for stride-1 dx
	bv    [][]T  // per worker [Co]: bias plus the sample's embedding
	dwk   [][]T  // per worker [Co, K]
	db    [][]T  // per worker [Co]
	du    [][]T  // per worker [α², Co, Ci]: Winograd weight gradient
	dadd  []T    // [B, Co]
	dx    []T    // [B, H, W, Ci]
}

// setWeights permutes the forward's weights input w into wk; gen moves on when any value
// changed (bitwise), or on the first call.
func (st *convState[T]) setWeights(w []T, co int) {
	var changed bool
	if is32[T]() {
		changed = permuteW(bitsOf[uint32](st.wk), bitsOf[uint32](w), co, st.g.Ci)
	} else {
		changed = permuteW(bitsOf[uint64](st.wk), bitsOf[uint64](w), co, st.g.Ci)
	}
	if changed || st.gen == 0 {
		st.gen++
	}
}

// bitsOf is s seen as the bit patterns of its values (U of T's size).
func bitsOf[U uint32 | uint64, T Float](s []T) []U {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*U)(unsafe.Pointer(&s[0])), len(s))
}

// permuteW converts PyTorch's [Co, Ci, 3, 3] to [Co, (ky, kx, ci)] and reports whether
// any value of wk changed.
func permuteW[U uint32 | uint64](wk, w []U, co, ci int) bool {
	var diff U
	for o := 0; o < co; o++ {
		src, dst := w[o*9*ci:(o+1)*9*ci], wk[o*9*ci:(o+1)*9*ci]
		for c := 0; c < ci; c++ {
			for t := 0; t < 9; t++ {
				v := src[c*9+t]
				diff |= dst[t*ci+c] ^ v
				dst[t*ci+c] = v
			}
		}
	}
	return diff != 0
}

// flipW sets wt[ci][(t, co)] = wk[co][(8−t, ci)]: the kernel of dx = conv(dy, ·)
// for a stride-1 convolution, t = 3·ky + kx.
func flipW[T Float](wt, wk []T, co, ci int) {
	for c := 0; c < ci; c++ {
		dst := wt[c*9*co : (c+1)*9*co]
		for t := 0; t < 9; t++ {
			for o := 0; o < co; o++ {
				dst[t*co+o] = wk[o*9*ci+(8-t)*ci+c]
			}
		}
	}
}

// unpermuteW is permuteW's inverse.
func unpermuteW[T Float](w, wk []T, co, ci int) {
	for o := 0; o < co; o++ {
		src, dst := wk[o*9*ci:(o+1)*9*ci], w[o*9*ci:(o+1)*9*ci]
		for c := 0; c < ci; c++ {
			for t := 0; t < 9; t++ {
				dst[c*9+t] = src[t*ci+c]
			}
		}
	}
}

// conv adds y = conv3×3(x, W) + bias [+ add broadcast over pixels] [+ res]
// for NHWC x [B, H, W, Ci]. add ([B, Co]) is the σ embedding's per-channel
// projection; res (the shape of y) is a residual connection. Either may be nil.
// needDx is false when x is data.
func (b *builder[T]) conv(name string, x *gorgonia.Node, co, stride int, add, res *gorgonia.Node, needDx bool) (*gorgonia.Node, error) {
	xs := x.Shape()
	st := &convState[T]{g: newConvGeom(xs[0], xs[1], xs[2], xs[3], co, stride)}
	g := &st.g
	st.wk = make([]T, co*g.K)
	ws := b.ws
	st.fwd, st.bwd = choose[T](b.net.conv, g)
	if st.fwd != convDirect {
		st.wf = newWinoConv[T](st.fwd.spec(), g)
		ws.reserve(st.wf.scratch(g))
	}
	if st.bwd == st.fwd {
		st.wb = st.wf
	} else if st.bwd != convDirect {
		st.wb = newWinoConv[T](st.bwd.spec(), g)
		ws.reserve(st.wb.scratch(g))
	}
	if st.fwd == convDirect || st.bwd == convDirect {
		ws.reserve(g.nb * g.Ho * g.Wo * max(g.K, 9*co))
	}
	st.bv = make([][]T, ws.nw)
	for i := range st.bv {
		st.bv[i] = make([]T, co)
	}
	hw := g.Ho * g.Wo
	inputs := []*gorgonia.Node{x, b.param(name + ".weight"), b.param(name + ".bias")}
	iAdd, iRes := -1, -1
	if add != nil {
		iAdd = len(inputs)
		inputs = append(inputs, add)
	}
	if res != nil {
		iRes = len(inputs)
		inputs = append(inputs, res)
	}
	fwd := func(y []T, in [][]T) {
		x, bias := in[0], in[2]
		st.setWeights(in[1], co)
		if wc := st.wf; wc != nil {
			var addv, resv []T
			if iAdd >= 0 {
				addv = in[iAdd]
			}
			if iRes >= 0 {
				resv = in[iRes]
			}
			wc.setWeights(g, st.wk, st.gen, ws.nw)
			wc.packFwd(g, st.gen, ws.nw)
			parallel(g.B, ws.nw, func(w, lo, hi int) {
				wc.forward(g, x, y, bias, addv, resv, st.bv[w], lo, hi, ws.get(w, wc.scratch(g)))
			})
			return
		}
		parallel(g.B, ws.nw, func(w, lo, hi int) {
			for c0 := lo; c0 < hi; c0 += g.nb {
				c1 := min(c0+g.nb, hi)
				m := (c1 - c0) * hw
				col := ws.get(w, m*g.K)
				im2col(g, x, col, c0, c1)
				yc := y[c0*hw*co : c1*hw*co]
				bv := st.bv[w]
				for s := c0; s < c1; s++ {
					copy(bv, bias)
					if iAdd >= 0 {
						addTo(bv, in[iAdd][s*co:(s+1)*co])
					}
					ys := yc[(s-c0)*hw*co : (s-c0+1)*hw*co]
					if iRes >= 0 {
						rs := in[iRes][s*hw*co : (s+1)*hw*co]
						for p := 0; p < hw; p++ {
							yr, rr := ys[p*co:(p+1)*co], rs[p*co:(p+1)*co]
							for j, v := range bv {
								yr[j] = rr[j] + v
							}
						}
					} else {
						for p := 0; p < hw; p++ {
							copy(ys[p*co:(p+1)*co], bv)
						}
					}
				}
				gemmT(false, true, m, co, g.K, 1, col, g.K, st.wk, g.K, 1, yc, co)
			}
		})
	}
	wrt := make([]bool, len(inputs))
	wrt[0], wrt[1], wrt[2] = needDx, true, true
	for i := 3; i < len(wrt); i++ {
		wrt[i] = true
	}
	diff := func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
		return b.convDiff(name, st, in[0], grad, iAdd >= 0, iRes >= 0, needDx, len(inputs))
	}
	if b.convs != nil {
		b.convs(convLayer{name: name, g: *g, add: add != nil, res: res != nil, needDx: needDx, fwd: st.fwd, bwd: st.bwd})
	}
	return apply[T](name, []int{g.B, g.Ho, g.Wo, co}, nil, fwd, wrt, diff, inputs...)
}

// convLayer describes one convolution of a network.
type convLayer struct {
	name             string
	g                convGeom
	add, res, needDx bool
	fwd, bwd         convAlgo // the algorithms chosen
}

// convDiff adds the backward op (dW, with db, d add and dx as side outputs
// picked by their own nodes) of a conv.
func (b *builder[T]) convDiff(name string, st *convState[T], x, dy *gorgonia.Node, hasAdd, hasRes, needDx bool, n int) (gorgonia.Nodes, error) {
	g := &st.g
	co, hw, ws := g.Co, g.Ho*g.Wo, b.ws
	st.dwk = make([][]T, ws.nw)
	st.db = make([][]T, ws.nw)
	for i := range st.dwk {
		st.dwk[i] = make([]T, co*g.K)
		st.db[i] = make([]T, co)
	}
	if st.wb != nil {
		st.du = make([][]T, ws.nw)
		for i := range st.du {
			st.du[i] = make([]T, len(st.wb.u))
		}
	}
	if hasAdd {
		st.dadd = make([]T, g.B*co)
	}
	var gd convGeom // dy's geometry, for stride-1 dx as a convolution of dy
	if needDx {
		st.dx = make([]T, g.B*g.H*g.W*g.Ci)
		if g.S == 1 && st.wb == nil {
			st.wt = make([]T, g.Ci*9*co)
			gd = newConvGeom(g.B, g.Ho, g.Wo, co, g.Ci, 1)
		}
	}
	dbias := b.gradOf(name + ".bias")
	if dbias == nil {
		dbias = make([]T, co)
	}
	// biasGrads adds samples [c0, c1)'s bias gradient into db and sets their
	// embedding gradients; dyc is their part of dy.
	biasGrads := func(db, dyc []T, c0, c1 int) {
		for s := c0; s < c1; s++ {
			if hasAdd {
				colSums(st.dadd[s*co:(s+1)*co], dyc[(s-c0)*hw*co:(s-c0+1)*hw*co], hw, co)
				addTo(db, st.dadd[s*co:(s+1)*co])
			} else {
				for p := 0; p < hw; p++ {
					addTo(db, dyc[((s-c0)*hw+p)*co:((s-c0)*hw+p+1)*co])
				}
			}
		}
	}
	bwd := func(dw []T, in [][]T) {
		x, dy := in[0], in[1]
		if wc := st.wb; wc != nil {
			wc.setWeights(g, st.wk, st.gen, ws.nw) // made by the forward unless it ran another algorithm
			var dx []T
			if needDx {
				dx = st.dx
				wc.packDx(g, st.gen, ws.nw)
			}
			parallel(g.B, ws.nw, func(w, lo, hi int) {
				clear(st.db[w])
				biasGrads(st.db[w], dy[lo*hw*co:hi*hw*co], lo, hi)
				wc.backward(g, x, dy, dx, st.du[w], lo, hi, ws.get(w, wc.scratch(g)))
			})
			for w := 1; w < ws.nw; w++ {
				addTo(st.du[0], st.du[w])
				addTo(st.db[0], st.db[w])
			}
			wc.weightGrad(g, st.du[0], st.dwk[0])
			unpermuteW(dw, st.dwk[0], co, g.Ci)
			copy(dbias, st.db[0])
			return
		}
		if st.wt != nil && st.wtGen != st.gen {
			flipW(st.wt, st.wk, co, g.Ci)
			st.wtGen = st.gen
		}
		parallel(g.B, ws.nw, func(w, lo, hi int) {
			dwk, db := st.dwk[w], st.db[w]
			clear(dwk)
			clear(db)
			for c0 := lo; c0 < hi; c0 += g.nb {
				c1 := min(c0+g.nb, hi)
				m := (c1 - c0) * hw
				col := ws.get(w, m*max(g.K, 9*co))
				dyc := dy[c0*hw*co : c1*hw*co]
				biasGrads(db, dyc, c0, c1)
				im2col(g, x, col[:m*g.K], c0, c1)
				gemmT(true, false, co, g.K, m, 1, dyc, co, col[:m*g.K], g.K, 1, dwk, g.K)
				switch {
				case needDx && g.S == 1:
					// dx = conv(dy, W flipped): a copy-only im2col and one GEMM
					// instead of col2im's scatter-add.
					im2col(&gd, dy, col[:m*gd.K], c0, c1)
					gemmT(false, true, m, g.Ci, gd.K, 1, col[:m*gd.K], gd.K, st.wt, gd.K, 0, st.dx[c0*g.H*g.W*g.Ci:c1*g.H*g.W*g.Ci], g.Ci)
				case needDx:
					gemmT(false, false, m, g.K, co, 1, dyc, co, st.wk, g.K, 0, col[:m*g.K], g.K)
					clear(st.dx[c0*g.H*g.W*g.Ci : c1*g.H*g.W*g.Ci])
					col2im(g, col[:m*g.K], st.dx, c0, c1)
				}
			}
		})
		for w := 1; w < ws.nw; w++ {
			addTo(st.dwk[0], st.dwk[w])
			addTo(st.db[0], st.db[w])
		}
		unpermuteW(dw, st.dwk[0], co, g.Ci)
		copy(dbias, st.db[0])
	}
	nop := func([]T, [][]T) {}
	res := make(gorgonia.Nodes, n)
	var err error
	if res[1], err = apply[T](name+".bwd", []int{co, g.Ci, 3, 3}, b.gradOf(name+".weight"), bwd, nil, nil, x, dy); err != nil {
		return nil, err
	}
	if res[2], err = apply[T](name+".db", []int{co}, dbias, nop, nil, nil, res[1]); err != nil {
		return nil, err
	}
	i := 3
	if hasAdd {
		if res[i], err = apply[T](name+".dadd", []int{g.B, co}, st.dadd, nop, nil, nil, res[1]); err != nil {
			return nil, err
		}
		i++
	}
	if hasRes {
		res[i] = dy
	}
	if needDx {
		if res[0], err = apply[T](name+".dx", []int{g.B, g.H, g.W, g.Ci}, st.dx, nop, nil, nil, res[1]); err != nil {
			return nil, err
		}
	}
	return res, nil
}
