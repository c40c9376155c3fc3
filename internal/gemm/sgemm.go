package gemm

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// kernel is a register-blocked micro-kernel and the cache blocking tuned for it.
type kernel struct {
	name   string
	mr, nr int // register tile: mr rows of A × nr columns of B
	kc     int // depth of a packed block: a B micro-panel (kc×nr) stays in L1
	mc     int // rows of A per packed block (mc×kc, in L2); multiple of mr
	nc     int // columns of B per packed block (kc×nc, in L2); multiple of nr
	// micro computes the mr×nr tile c = alpha·a·b + beta·c over kc steps,
	// from an A micro-panel (mr values per step) and a B micro-panel (nr per
	// step). c is not read when beta == 0.
	micro func(kc int, a, b, c []float32, ldc int, alpha, beta float32)
	// microRows, if not nil, is micro with A read in place (row i of the
	// tile at a[i·lda:]) instead of packed. Transposing A into panels costs
	// as much as a sixth of the multiply when n is a few tiles wide (the
	// convolutions' im2col matrices times Co ≤ 128 filters), and reading mr
	// rows in place touches as many cache lines as the packed panel.
	microRows func(kc int, a []float32, lda int, b, c []float32, ldc int, alpha, beta float32)

	// Optional vectorised packing of whole panels (nil: portable Go).
	// copyRows: dst[q·w·kb + p·w + j] = src[p·lds + q·w + j] for p < kb,
	// j < w and q < panels (whole panels side by side).
	copyRows func(kb int, src *float32, lds int, dst *float32, w, panels int)
	// transRows: dst[p·w + j] = src[j·lds + p] for p < 8·kb8, j < w.
	// copyRows needs w%8 == 0 or w == 6, transRows w%8 == 0.
	transRows func(kb8 int, src *float32, lds int, dst *float32, w int)
}

// blocked sets k's cache blocks from the cache sizes c, after the
// analytical model of BLIS (Low et al., 2016), and returns k:
//   - kc: a kc×nr micro-panel of B stays in L1 while the A micro-panels and
//     C tiles stream past it, so it takes half of the L1;
//   - mc: the mc×kc block of A that every micro-panel of B meets stays in
//     half of the L2;
//   - nc: the kc×nc block of B that every block of A meets takes the other
//     half of the L2 (not the L3: its share per core is small on the many-
//     core parts, and the networks' products are at most a few hundred wide).
//
// Tuned constants would fit one machine: a Zen 1 has a 32 KiB L1 and 512
// KiB L2, a Zen 5 48 KiB and 1 MiB, an Intel client core 48 KiB and 1.25–2
// MiB.
func blocked(k *kernel, c CacheSizes) *kernel {
	k.kc = clampTo(c.L1/2/(4*k.nr), 64, 512, 8)
	k.mc = clampTo(c.L2/2/(4*k.kc), 8*k.mr, 1024, k.mr)
	k.nc = clampTo(c.L2/2/(4*k.kc), 4*k.nr, 2048, k.nr)
	return k
}

// clampTo rounds v down to a multiple of unit within [lo, hi].
func clampTo(v, lo, hi, unit int) int {
	return max(lo/unit*unit, min(hi, v)/unit*unit)
}

// parallelMin is the number of multiply-adds below which a call stays on one
// goroutine: starting and joining a goroutine costs a few microseconds, as much
// as ~300k multiply-adds at the kernels' speed.
const parallelMin = 1 << 18

// sgemm is Sgemm with an explicit kernel and goroutine count, so that tests can
// exercise every implementation on any machine.
func sgemm(kern *kernel, threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkArgs(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scale(m, n, beta, c, ldc)
		return
	}
	p := problem{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
		a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc}

	w0 := getWorker(kern)
	defer putWorker(kern, w0)
	if threads < 2 || m*n*k < parallelMin {
		w0.run(kern, &p, 0, m, 0, n)
		return
	}

	// Cut one dimension into chunks that goroutines take in turn, so a core
	// slowed by other work (or by another Sgemm) takes fewer. Each chunk of
	// columns packs A again and each chunk of rows packs B again, beyond what
	// one goroutine would pack; cut the way that repacks less.
	j := &w0.job
	j.p, j.kern = p, kern
	nChunk, nChunks := chunking(n, kern.nr, kern.nc, threads)
	mChunk, mChunks := chunking(m, kern.mr, kern.mc, threads)
	serialA := (n + kern.nc - 1) / kern.nc // times one goroutine packs A
	j.splitN = m*(nChunks-min(nChunks, serialA)) <= n*(mChunks-1)
	j.chunk, j.chunks = mChunk, mChunks
	if j.splitN {
		j.chunk, j.chunks = nChunk, nChunks
	}
	j.next.Store(0)
	parts := min(threads, j.chunks, maxParts)

	var ws [maxParts]*worker
	j.wg.Add(parts - 1)
	for i := 1; i < parts; i++ {
		w := getWorker(kern)
		w.shared = j
		ws[i] = w
		go w.fn()
	}
	w0.drain(j)
	j.wg.Wait()
	for _, w := range ws[1:parts] {
		w.shared = nil
		putWorker(kern, w)
	}
	j.p = problem{} // drop the caller's slices
}

// chunking cuts dim into chunks of whole units (tiles) for threads
// goroutines: cache-block sized if that gives at least two per goroutine,
// else smaller, so that a slow goroutine can be made up for.
func chunking(dim, unit, limit, threads int) (chunk, chunks int) {
	chunk = balance(dim, limit, unit)
	if dim < 2*threads*chunk {
		chunk = max(unit, (dim+2*threads-1)/(2*threads)/unit*unit)
	}
	return chunk, (dim + chunk - 1) / chunk
}

// maxParts bounds the goroutines one call uses, so their workers fit an array
// on the stack.
const maxParts = 64

// job is a call split into chunks of rows or columns of C.
type job struct {
	kern          *kernel
	p             problem
	splitN        bool // chunks are columns (else rows)
	chunk, chunks int
	next          atomic.Int64 // next chunk to take
	wg            sync.WaitGroup
}

// drain computes chunks of j until none is left.
func (w *worker) drain(j *job) {
	for {
		c := int(j.next.Add(1) - 1)
		if c >= j.chunks {
			return
		}
		lo := c * j.chunk
		if j.splitN {
			w.run(j.kern, &j.p, 0, j.p.m, lo, min(j.p.n, lo+j.chunk))
		} else {
			w.run(j.kern, &j.p, lo, min(j.p.m, lo+j.chunk), 0, j.p.n)
		}
	}
}

// problem is one Sgemm call's arguments.
type problem struct {
	transA, transB bool
	m, n, k        int
	alpha          float32
	a              []float32
	lda            int
	b              []float32
	ldb            int
	beta           float32
	c              []float32
	ldc            int
	// pb, if not nil, is op(B) already packed (see PackedB), for the whole
	// n columns: run then reads its blocks instead of packing B.
	pb []float32
}

// worker owns the packing buffers of one goroutine. Workers are kept on a free
// list so that calls allocate nothing in steady state.
type worker struct {
	abuf, bbuf []float32
	tile       []float32 // mr×nr scratch for edge tiles

	job    job  // the call this worker leads, when it leads one
	shared *job // the call this worker helps with
	// fn drains shared on another goroutine; it is bound once at creation
	// so that starting it allocates nothing.
	fn func()
}

// A free list per kernel rather than a sync.Pool: the garbage collector
// empties pools, and refilling one costs a megabyte of buffers per worker.
// Calls beyond the list's capacity allocate and drop their workers.
var (
	freeMu sync.Mutex
	free   = map[*kernel][]*worker{}
)

const maxFree = 16

func getWorker(kern *kernel) *worker {
	freeMu.Lock()
	if ws := free[kern]; len(ws) > 0 {
		w := ws[len(ws)-1]
		free[kern] = ws[:len(ws)-1]
		freeMu.Unlock()
		return w
	}
	freeMu.Unlock()
	w := &worker{
		abuf: alignedFloats(kern.mc * kern.kc),
		bbuf: alignedFloats(kern.kc * kern.nc),
		tile: alignedFloats(kern.mr * kern.nr),
	}
	w.fn = func() {
		w.drain(w.shared)
		w.shared.wg.Done()
	}
	return w
}

func putWorker(kern *kernel, w *worker) {
	freeMu.Lock()
	if ws := free[kern]; len(ws) < maxFree {
		if ws == nil {
			ws = make([]*worker, 0, maxFree)
		}
		free[kern] = append(ws, w)
	}
	freeMu.Unlock()
}

// alignedFloats returns n float32s starting on a 64-byte cache line.
func alignedFloats(n int) []float32 {
	buf := make([]float32, n+16)
	off := int(uintptr(unsafe.Pointer(&buf[0])) & 63 / 4)
	if off != 0 {
		off = 16 - off
	}
	return buf[off : off+n : off+n]
}

// run computes rows [i0,i1) × columns [j0,j1) of C, in the BLIS loop order:
// B blocks of kc×nc, then A blocks of mc×kc, then nr-wide and mr-tall tiles.
//
// Blocks are balanced: k = 288 with kc = 256 runs as 2×144, not 256 + 32,
// since a thin block costs a full pass over C for little work.
func (w *worker) run(kern *kernel, p *problem, i0, i1, j0, j1 int) {
	ncb := balance(j1-j0, kern.nc, kern.nr)
	kcb := balance(p.k, kern.kc, 8)
	mcb := balance(i1-i0, kern.mc, kern.mr)
	pbOff := 0
	for jc := j0; jc < j1; jc += ncb {
		nb := min(ncb, j1-jc)
		for pc := 0; pc < p.k; pc += kcb {
			kb := min(kcb, p.k-pc)
			bb := w.bbuf
			if p.pb != nil {
				n := kb * roundUp(nb, kern.nr)
				bb = p.pb[pbOff : pbOff+n]
				pbOff += n
			} else {
				packB(kern, p.transB, p.b, p.ldb, pc, jc, kb, nb, bb)
			}
			beta := p.beta
			if pc > 0 {
				beta = 1 // later blocks accumulate onto the first one's result
			}
			for ic := i0; ic < i1; ic += mcb {
				mb := min(mcb, i1-ic)
				var a []float32 // A in place, or nil when packed
				if !p.transA && kern.microRows != nil {
					a = p.a[ic*p.lda+pc:]
					if full := mb / kern.mr * kern.mr; full < mb {
						// Only the short last panel is packed (zero-padded).
						transRows(kern, kb, a[full*p.lda:], p.lda, w.abuf[full*kb:(full+kern.mr)*kb], mb-full, kern.mr)
					}
				} else {
					packA(kern, p.transA, p.a, p.lda, ic, pc, mb, kb, w.abuf)
				}
				w.macro(kern, kb, mb, nb, a, p.lda, bb, p.c[ic*p.ldc+jc:], p.ldc, p.alpha, beta)
			}
		}
	}
}

func roundUp(n, unit int) int { return (n + unit - 1) / unit * unit }

// balance returns the block size, at most limit and a multiple of unit
// (which divides limit), that splits n into the fewest nearly equal blocks.
func balance(n, limit, unit int) int {
	blocks := (n + limit - 1) / limit
	size := (n + blocks - 1) / blocks
	return min(limit, (size+unit-1)/unit*unit)
}

// macro multiplies an mb×kb block of A by a packed kb×nb block of B (bb)
// into c, tile by tile; the B micro-panel stays in L1 across the column of
// tiles. A is packed in w.abuf, or if a is not nil read in place from a
// (stride lda) but for a short last panel, which is packed.
func (w *worker) macro(kern *kernel, kb, mb, nb int, a []float32, lda int, bb, c []float32, ldc int, alpha, beta float32) {
	mr, nr := kern.mr, kern.nr
	for jr := 0; jr < nb; jr += nr {
		nn := min(nr, nb-jr)
		bp := bb[jr*kb : (jr+nr)*kb]
		for ir := 0; ir < mb; ir += mr {
			mm := min(mr, mb-ir)
			ap := w.abuf[ir*kb : (ir+mr)*kb]
			cp := c[ir*ldc+jr:]
			inPlace := a != nil && mm == mr
			if mm == mr && nn == nr {
				if inPlace {
					kern.microRows(kb, a[ir*lda:], lda, bp, cp, ldc, alpha, beta)
				} else {
					kern.micro(kb, ap, bp, cp, ldc, alpha, beta)
				}
				continue
			}
			// Edge tile: the packed panels are zero-padded, so compute the
			// full tile into scratch and merge only its valid part.
			if inPlace {
				kern.microRows(kb, a[ir*lda:], lda, bp, w.tile, nr, alpha, 0)
			} else {
				kern.micro(kb, ap, bp, w.tile, nr, alpha, 0)
			}
			for i := range mm {
				row := cp[i*ldc : i*ldc+nn]
				t := w.tile[i*nr : i*nr+nn]
				if beta == 0 {
					copy(row, t)
					continue
				}
				for j := range row {
					row[j] = beta*row[j] + t[j]
				}
			}
		}
	}
}

// scale sets C = beta·C, without reading C when beta == 0.
func scale(m, n int, beta float32, c []float32, ldc int) {
	if beta == 1 {
		return
	}
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}
