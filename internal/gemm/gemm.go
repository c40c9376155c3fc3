// Package gemm multiplies row-major matrices: C = alpha·op(A)·op(B) + beta·C.
// It is the one place the score networks' convolutions and linear layers
// spend their time, so it is kept separate from gorgonia and tuned here.
//
// Sgemm is a Goto/BLIS-style implementation: op(A) and op(B) are packed into
// cache-sized blocks laid out for a register-blocked micro-kernel (Go assembly
// with AVX-512 or AVX2+FMA on amd64, portable Go elsewhere), and large problems
// are split across GOMAXPROCS goroutines, all of which have finished when the
// call returns. Sgemm is safe for concurrent use. The block sizes follow the
// CPU's cache sizes (CPUID), and NCSN_GEMM=avx2 (or generic) forces a
// narrower kernel than the CPU allows, to measure it.
package gemm

import (
	"fmt"
	"runtime"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

var impl gonum.Implementation

func trans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major float32 matrices,
// where op(A) is m×k, op(B) is k×n and C is m×n; lda, ldb, ldc are row strides.
// As in BLAS, C is not read when beta == 0, and k == 0 or alpha == 0 only
// scales C by beta. Inconsistent sizes or short slices panic, like an
// out-of-range index: they are programming errors, and the kernels would
// otherwise write outside C.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemm(defaultKernel, runtime.GOMAXPROCS(0), transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Kernel names the micro-kernel Sgemm uses: avx512, avx2 or generic.
func Kernel() string { return defaultKernel.name }

// Dgemm is Sgemm in float64 (used by gradient checks).
func Dgemm(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	impl.Dgemm(trans(transA), trans(transB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// checkArgs panics with a descriptive message when the slices cannot hold
// the matrices their sizes and strides describe.
func checkArgs(transA, transB bool, m, n, k int, la, lda, lb, ldb, lc, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("gemm: negative size m=%d n=%d k=%d", m, n, k))
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	check := func(name string, rows, cols, l, ld int) {
		if ld < max(1, cols) {
			panic(fmt.Sprintf("gemm: ld%s=%d < %d columns", name, ld, cols))
		}
		if rows > 0 && cols > 0 && l < (rows-1)*ld+cols {
			panic(fmt.Sprintf("gemm: len(%s)=%d too short for %d×%d with stride %d", name, l, rows, cols, ld))
		}
	}
	check("c", m, n, lc, ldc)
	if k > 0 && m > 0 && n > 0 {
		check("a", ar, ac, la, lda)
		check("b", br, bc, lb, ldb)
	}
}
