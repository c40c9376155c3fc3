package gemm

import "fmt"

// SgemmBatch computes count products C_i = alpha·op(A_i)·op(B_i) + beta·C_i
// of the same shape, where A_i starts at a[i·strideA], B_i at b[i·strideB]
// and C_i at c[i·strideC]; the other arguments are Sgemm's. It runs on the
// calling goroutine: it is for callers that already split their work across
// cores (the Winograd convolution runs one batch of small products per
// worker), where starting more goroutines per product would cost more than it
// saves. The products may not overlap in C.
func SgemmBatch(transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, count int) {
	sgemmBatch(defaultKernel, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, count)
}

func sgemmBatch(kern *kernel, transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, count int) {
	runBatch(kern, count, m, n, k, alpha, beta, c, ldc, strideC, func(i int, ci []float32) problem {
		ai, bi := a, b
		if k > 0 && alpha != 0 {
			ai, bi = a[i*strideA:], b[i*strideB:]
		}
		checkArgs(transA, transB, m, n, k, len(ai), lda, len(bi), ldb, len(ci), ldc)
		return problem{transA: transA, transB: transB, a: ai, lda: lda, b: bi, ldb: ldb}
	})
}

// runBatch runs count products of one shape on one worker, C_i at c[i·strideC:]; operands
// gives the i-th product's A and B, checked against C_i (ci).
func runBatch(kern *kernel, count, m, n, k int, alpha, beta float32, c []float32, ldc, strideC int, operands func(i int, ci []float32) problem) {
	if count <= 0 || m == 0 || n == 0 {
		return
	}
	w := getWorker(kern)
	defer putWorker(kern, w)
	for i := range count {
		ci := c[i*strideC:]
		p := operands(i, ci)
		if k == 0 || alpha == 0 {
			scale(m, n, beta, ci, ldc)
			continue
		}
		p.m, p.n, p.k, p.alpha, p.beta, p.c, p.ldc = m, n, k, alpha, beta, ci, ldc
		w.run(kern, &p, 0, m, 0, n)
	}
}

// PackedB holds count k×n matrices op(B_i), packed once into the layout the
// GEMM kernel reads, for products that reuse them: the Winograd
// convolution's transformed weights meet every chunk of tiles, and packing
// a small B again for each costs as much as a fifth of the product.
type PackedB struct {
	kern        *kernel
	k, n, count int
	size        int // values per packed matrix
	buf         []float32
}

// NewPackedB allocates room for count packed k×n matrices.
func NewPackedB(k, n, count int) *PackedB {
	return newPackedB(defaultKernel, k, n, count)
}

func newPackedB(kern *kernel, k, n, count int) *PackedB {
	if k < 0 || n < 0 || count < 0 {
		panic(fmt.Sprintf("gemm: PackedB of %d matrices %d×%d", count, k, n))
	}
	size := k * roundUp(n, kern.nr)
	return &PackedB{kern: kern, k: k, n: n, count: count, size: size, buf: alignedFloats(size * count)}
}

// Pack packs op(B_i), the i-th matrix, from b with row stride ldb (as
// Sgemm's b and ldb). Different i may be packed concurrently.
func (p *PackedB) Pack(i int, transB bool, b []float32, ldb int) {
	kern, k, n := p.kern, p.k, p.n
	if i < 0 || i >= p.count {
		panic(fmt.Sprintf("gemm: packing matrix %d of %d", i, p.count))
	}
	if k == 0 || n == 0 {
		return
	}
	checkArgs(false, transB, 1, n, k, k, k, len(b), ldb, n, n)
	dst := p.buf[i*p.size : (i+1)*p.size]
	ncb, kcb := balance(n, kern.nc, kern.nr), balance(k, kern.kc, 8)
	off := 0
	// The blocks in the order run visits them.
	for jc := 0; jc < n; jc += ncb {
		nb := min(ncb, n-jc)
		for pc := 0; pc < k; pc += kcb {
			kb := min(kcb, k-pc)
			sz := kb * roundUp(nb, kern.nr)
			packB(kern, transB, b, ldb, pc, jc, kb, nb, dst[off:off+sz])
			off += sz
		}
	}
}

// SgemmBatchPacked is SgemmBatch with op(B_i) = the i-th matrix of pb, for
// i < pb's count, m×k A_i and m×n C_i.
func SgemmBatchPacked(transA bool, m int, alpha float32, a []float32, lda, strideA int, pb *PackedB, beta float32, c []float32, ldc, strideC int) {
	k, n := pb.k, pb.n
	runBatch(pb.kern, pb.count, m, n, k, alpha, beta, c, ldc, strideC, func(i int, ci []float32) problem {
		ai := a
		if k > 0 && alpha != 0 {
			ai = a[i*strideA:]
		}
		// B is checked as a dense k×n matrix: the packed one always is.
		checkArgs(transA, false, m, n, k, len(ai), lda, k*n, n, len(ci), ldc)
		return problem{transA: transA, a: ai, lda: lda, pb: pb.buf[i*pb.size : (i+1)*pb.size]}
	})
}
