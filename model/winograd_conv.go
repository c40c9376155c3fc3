package model

import (
	"unsafe"

	"github.com/ncsn/ncsn/internal/gemm"
)

// winoConv is one stride-1 convolution layer's Winograd state.
type winoConv[T Float] struct {
	spec   *winoSpec
	th, tw int // tiles down and across an image
	tps    int // tiles per sample
	chunk  int // tiles per batch of GEMMs
	u      []T // transformed weights [α²][Co][Ci]
	// The float32 GEMMs' B operands packed once per step: U[ξ]ᵀ for the
	// forward, U[ξ] for the input gradient (nil until needed).
	pf, pd *gemm.PackedB
	// The convState gen of the weights u, pf and pd were made from (0: never).
	uGen, pfGen, pdGen uint64
}

// winoCache is the cache a chunk's transformed tiles (both sides) should fit
// in: the L2, where the transforms write them and the GEMMs read them.
var winoCache = gemm.Caches().L2

func newWinoConv[T Float](spec *winoSpec, g *convGeom) *winoConv[T] {
	m, a := spec.m, spec.a
	wc := &winoConv[T]{spec: spec, th: (g.Ho + m - 1) / m, tw: (g.Wo + m - 1) / m}
	wc.tps = wc.th * wc.tw
	perTile := a * a * (g.Ci + g.Co) * int(unsafe.Sizeof(T(0)))
	// Whole register tiles of the GEMM (8 rows), at least 32 so that the
	// weights read per GEMM are spread over enough work, at most the batch.
	wc.chunk = min(max(32, winoCache/perTile/8*8), g.B*wc.tps)
	wc.u = make([]T, a*a*g.Co*g.Ci)
	return wc
}

// scratch is the workspace values one worker needs: the chunk's transformed
// tiles of both sides and a tile of each side for the image edges.
func (wc *winoConv[T]) scratch(g *convGeom) int {
	a := wc.spec.a
	return a*a*wc.chunk*(g.Ci+g.Co) + a*a*max(g.Ci, g.Co)
}

// setWeights computes U = G·g·Gᵀ from the weights in column order wk
// [Co, (ky, kx, ci)], generation gen, on nw goroutines, unless U is of gen already.
func (wc *winoConv[T]) setWeights(g *convGeom, wk []T, gen uint64, nw int) {
	if wc.uGen == gen {
		return
	}
	wc.uGen = gen
	a := wc.spec.a
	cc := g.Co * g.Ci
	parallel(g.Co, nw, func(_, lo, hi int) {
		for o := lo; o < hi; o++ {
			xformApply(wc.spec.w, g.Ci, wk[o*g.K:], 3*g.Ci, g.Ci, wc.u[o*g.Ci:], a*cc, cc, nil, nil, false)
		}
	})
}

// packFwd packs U for the forward's GEMMs (each U_iᵀ, Ci×Co), on nw goroutines.
func (wc *winoConv[T]) packFwd(g *convGeom, gen uint64, nw int) {
	wc.pack(&wc.pf, &wc.pfGen, gen, g.Ci, g.Co, true, g, nw)
}

// packDx packs U for the input gradient's GEMMs (each U_i, Co×Ci), on nw goroutines.
func (wc *winoConv[T]) packDx(g *convGeom, gen uint64, nw int) {
	wc.pack(&wc.pd, &wc.pdGen, gen, g.Co, g.Ci, false, g, nw)
}

// pack packs U's α² matrices [Co][Ci], transposed or not, as k×n into *pb (made on first
// use), unless *pbGen says they are packed from gen already.
func (wc *winoConv[T]) pack(pb **gemm.PackedB, pbGen *uint64, gen uint64, k, n int, trans bool, g *convGeom, nw int) {
	if !is32[T]() || *pbGen == gen {
		return
	}
	*pbGen = gen
	a, cc := wc.spec.a, g.Co*g.Ci
	if *pb == nil {
		*pb = gemm.NewPackedB(k, n, a*a)
	}
	p, u := *pb, as[float32](wc.u)
	parallel(a*a, nw, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			p.Pack(i, trans, u[i*cc:], g.Ci)
		}
	})
}

// weightGrad sets dwk [Co, (ky, kx, ci)] = Gᵀ·dU·G for dU [α²][Co][Ci].
func (wc *winoConv[T]) weightGrad(g *convGeom, du, dwk []T) {
	a := wc.spec.a
	cc := g.Co * g.Ci
	for o := 0; o < g.Co; o++ {
		xformApply(wc.spec.dw, g.Ci, du[o*g.Ci:], a*cc, cc, dwk[o*g.K:], 3*g.Ci, g.Ci, nil, nil, false)
	}
}

// tile returns sample s and the tile's row and column of tile t.
func (wc *winoConv[T]) tile(t int) (s, ty, tx int) {
	s, r := t/wc.tps, t%wc.tps
	return s, r / wc.tw, r % wc.tw
}

// inputTiles sets v[ξ][k][0:c] = L·d·Lᵀ for the tiles t0+k < t1, with L =
// xf (q×q patches) and d the patch of the NHWC images x [B, h, w, c] at
// (ty·m+off, tx·m+off), zero outside the image. edge is scratch for patches
// that cross the border.
func (wc *winoConv[T]) inputTiles(xf *xform, off int, x []T, h, w, c, t0, t1 int, v, edge []T) {
	m, a, q, nt := wc.spec.m, wc.spec.a, xf.q, t1-t0
	for t := t0; t < t1; t++ {
		s, ty, tx := wc.tile(t)
		y0, x0 := ty*m+off, tx*m+off
		xs := x[s*h*w*c : (s+1)*h*w*c]
		dst := v[(t-t0)*c:]
		if y0 >= 0 && x0 >= 0 && y0+q <= h && x0+q <= w {
			xformApply(xf, c, xs[(y0*w+x0)*c:], w*c, c, dst, a*nt*c, nt*c, nil, nil, false)
			continue
		}
		gatherPatch(edge, xs, h, w, c, y0, x0, q)
		xformApply(xf, c, edge, q*c, c, dst, a*nt*c, nt*c, nil, nil, false)
	}
}

// gatherPatch copies the p×p patch of image xs [h, w, c] at (y0, x0) into
// dst [p, p, c], zero where it falls outside the image.
func gatherPatch[T Float](dst, xs []T, h, w, c, y0, x0, p int) {
	lo, hi := max(0, -x0), min(p, w-x0) // columns inside the image
	for r := 0; r < p; r++ {
		row := dst[r*p*c : (r+1)*p*c]
		iy := y0 + r
		if iy < 0 || iy >= h || lo >= hi {
			clear(row)
			continue
		}
		clear(row[:lo*c])
		copy(row[lo*c:hi*c], xs[(iy*w+x0+lo)*c:(iy*w+x0+hi)*c])
		clear(row[hi*c:])
	}
}

// gemmBatch is gemm.SgemmBatch, or SgemmBatchPacked when pb holds op(B)
// packed, for float32, and a loop of Dgemm for float64.
func gemmBatch[T Float](tA, tB bool, m, n, k int, a []T, lda, sa int, b []T, ldb, sb int, pb *gemm.PackedB, beta T, c []T, ldc, sc, count int) {
	if is32[T]() {
		if pb != nil {
			gemm.SgemmBatchPacked(tA, m, 1, as[float32](a), lda, sa, pb, float32(beta), as[float32](c), ldc, sc)
			return
		}
		gemm.SgemmBatch(tA, tB, m, n, k, 1, as[float32](a), lda, sa, as[float32](b), ldb, sb, float32(beta), as[float32](c), ldc, sc, count)
		return
	}
	for i := 0; i < count; i++ {
		gemm.Dgemm(tA, tB, m, n, k, 1, as[float64](a[i*sa:]), lda, as[float64](b[i*sb:]), ldb, float64(beta), as[float64](c[i*sc:]), ldc)
	}
}

// forward computes y = conv(x) + bias [+ add[s]] [+ res] for samples
// [lo, hi): add ([B, Co]) and res (y's shape) may be nil. bv ([Co]) and buf
// are the worker's scratch.
func (wc *winoConv[T]) forward(g *convGeom, x, y, bias, add, res, bv []T, lo, hi int, buf []T) {
	m, a := wc.spec.m, wc.spec.a
	ci, co, ho, wo := g.Ci, g.Co, g.Ho, g.Wo
	v, buf := buf[:a*a*wc.chunk*ci], buf[a*a*wc.chunk*ci:]
	mm, edge := buf[:a*a*wc.chunk*co], buf[a*a*wc.chunk*co:]
	last := -1
	for t0 := lo * wc.tps; t0 < hi*wc.tps; t0 += wc.chunk {
		t1 := min(t0+wc.chunk, hi*wc.tps)
		nt := t1 - t0
		wc.inputTiles(wc.spec.in, -1, x, g.H, g.W, ci, t0, t1, v, edge)
		// M[ξ] = V[ξ]·U[ξ]ᵀ: [nt × Ci]·[Ci × Co].
		gemmBatch(false, true, nt, co, ci, v, ci, nt*ci, wc.u, ci, co*ci, wc.pf, 0, mm, co, nt*co, a*a)
		for t := t0; t < t1; t++ {
			s, ty, tx := wc.tile(t)
			if s != last {
				last = s
				copy(bv, bias)
				if add != nil {
					addTo(bv, add[s*co:(s+1)*co])
				}
			}
			y0, x0 := ty*m, tx*m
			o := (s*ho*wo + y0*wo + x0) * co // the tile's first output
			src := mm[(t-t0)*co:]
			if y0+m <= ho && x0+m <= wo {
				var r []T
				if res != nil {
					r = res[o:]
				}
				xformApply(wc.spec.out, co, src, a*nt*co, nt*co, y[o:], wo*co, co, bv, r, false)
				continue
			}
			// A tile that overhangs the image: compute it whole, keep the inside.
			e := edge[:m*m*co]
			xformApply(wc.spec.out, co, src, a*nt*co, nt*co, e, m*co, co, bv, nil, false)
			n := min(m, wo-x0) * co
			for r := 0; r < m && y0+r < ho; r++ {
				yr, er := y[o+r*wo*co:][:n], e[r*m*co:][:n]
				if res != nil {
					addVec(yr, er, res[o+r*wo*co:][:n])
				} else {
					copy(yr, er)
				}
			}
		}
	}
}

// backward sets du [α²][Co][Ci] = Σ Dᵀ·V over the tiles of samples [lo, hi)
// and, if dx is not nil, their dx.
func (wc *winoConv[T]) backward(g *convGeom, x, dy, dx, du []T, lo, hi int, buf []T) {
	m, a := wc.spec.m, wc.spec.a
	ci, co, ho, wo := g.Ci, g.Co, g.Ho, g.Wo
	v, buf := buf[:a*a*wc.chunk*ci], buf[a*a*wc.chunk*ci:]
	d, edge := buf[:a*a*wc.chunk*co], buf[a*a*wc.chunk*co:]
	if lo == hi {
		clear(du)
	}
	for t0 := lo * wc.tps; t0 < hi*wc.tps; t0 += wc.chunk {
		t1 := min(t0+wc.chunk, hi*wc.tps)
		nt := t1 - t0
		wc.inputTiles(wc.spec.in, -1, x, g.H, g.W, ci, t0, t1, v, edge)
		// D = A·dY·Aᵀ for each tile, dY zero beyond the image.
		wc.inputTiles(wc.spec.dy, 0, dy, ho, wo, co, t0, t1, d, edge)
		// dU[ξ] += D[ξ]ᵀ·V[ξ]: [Co × nt]·[nt × Ci].
		beta := T(1)
		if t0 == lo*wc.tps {
			beta = 0
		}
		gemmBatch(true, false, co, ci, nt, d, co, nt*co, v, ci, nt*ci, nil, beta, du, ci, co*ci, a*a)
		if dx == nil {
			continue
		}
		// Z[ξ] = D[ξ]·U[ξ] into V's place: [nt × Co]·[Co × Ci].
		z := v
		gemmBatch(false, false, nt, ci, co, d, co, nt*co, wc.u, ci, co*ci, wc.pd, 0, z, ci, nt*ci, a*a)
		for t := t0; t < t1; t++ {
			s, ty, tx := wc.tile(t)
			y0, x0 := ty*m-1, tx*m-1
			xs := dx[s*g.H*g.W*ci : (s+1)*g.H*g.W*ci]
			src := z[(t-t0)*ci:]
			// Tiles run in raster order and cover every pixel, so each α×α
			// patch adds to what the tiles above and to the left wrote into
			// its first two rows and columns, and sets the rest.
			if y0 >= 0 && x0 >= 0 && y0+a <= g.H && x0+a <= g.W {
				xformApply(wc.spec.dx, ci, src, a*nt*ci, nt*ci, xs[(y0*g.W+x0)*ci:], g.W*ci, ci, nil, nil, true)
				continue
			}
			e := edge[:a*a*ci]
			xformApply(wc.spec.dx, ci, src, a*nt*ci, nt*ci, e, a*ci, ci, nil, nil, false)
			lo, hi := max(0, -x0), min(a, g.W-x0) // patch columns inside the image
			split := lo                           // columns before split add, the rest set
			if tx > 0 {
				split = max(lo, min(2, hi))
			}
			for r := 0; r < a; r++ {
				iy := y0 + r
				if iy < 0 || iy >= g.H || lo >= hi {
					continue
				}
				row, er := xs[(iy*g.W+x0+lo)*ci:(iy*g.W+x0+hi)*ci], e[(r*a+lo)*ci:(r*a+hi)*ci]
				k := (split - lo) * ci
				if r < 2 && ty > 0 {
					k = len(row)
				}
				addVec(row[:k], row[:k], er[:k])
				copy(row[k:], er[k:])
			}
		}
	}
}
