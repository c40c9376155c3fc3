package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// kernels lists every implementation this machine can run.
func kernels() []*kernel {
	ks := []*kernel{genericKernel}
	for _, k := range archKernels() {
		if k != genericKernel {
			ks = append(ks, k)
		}
	}
	return ks
}

// randMat returns a rows×cols matrix with row stride ld, the padding between
// rows filled with a sentinel so that reads of it show up in the result.
func randMat(r *rand.Rand, rows, cols, ld int) []float32 {
	if rows == 0 {
		return nil
	}
	s := make([]float32, (rows-1)*ld+cols)
	for i := range s {
		if i%ld < cols {
			s[i] = float32(r.NormFloat64())
		} else {
			s[i] = 1e30
		}
	}
	return s
}

// refGemm computes op(A)·op(B) and Σ|op(A)||op(B)| in float64.
func refGemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int) (prod, abs []float64) {
	prod, abs = make([]float64, m*n), make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s, t float64
			for p := range k {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
				t += math.Abs(float64(av) * float64(bv))
			}
			prod[i*n+j], abs[i*n+j] = s, t
		}
	}
	return prod, abs
}

type gemmCase struct {
	transA, transB bool
	m, n, k        int
	pad            int // extra stride beyond each matrix's width
	alpha, beta    float32
}

func (tc gemmCase) String() string {
	return fmt.Sprintf("tA=%v,tB=%v,m=%d,n=%d,k=%d,pad=%d,alpha=%g,beta=%g",
		tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.pad, tc.alpha, tc.beta)
}

// check runs one case with the given kernel and goroutine count against the
// float64 reference, including that C's padding is left untouched.
func check(t *testing.T, r *rand.Rand, kern *kernel, threads int, tc gemmCase) {
	t.Helper()
	ar, ac := tc.m, tc.k
	if tc.transA {
		ar, ac = tc.k, tc.m
	}
	br, bc := tc.k, tc.n
	if tc.transB {
		br, bc = tc.n, tc.k
	}
	lda, ldb, ldc := max(1, ac+tc.pad), max(1, bc+tc.pad), max(1, tc.n+tc.pad)
	a, b := randMat(r, ar, ac, lda), randMat(r, br, bc, ldb)
	c := randMat(r, tc.m, tc.n, ldc)
	c0 := append([]float32(nil), c...)
	if tc.beta == 0 {
		for i := range tc.m {
			for j := range tc.n {
				c[i*ldc+j] = float32(math.NaN()) // must not be read
			}
		}
	}
	prod, abs := refGemm(tc.transA, tc.transB, tc.m, tc.n, tc.k, a, lda, b, ldb)

	sgemm(kern, threads, tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc)

	// Error bound for float32 accumulation of k products plus the beta term.
	const eps = 1.0 / (1 << 23)
	for i := range tc.m {
		for j := range ldc {
			if i*ldc+j >= len(c) {
				break
			}
			got := c[i*ldc+j]
			if j >= tc.n {
				if got != c0[i*ldc+j] {
					t.Fatalf("%v: padding C[%d][%d] changed to %g", tc, i, j, got)
				}
				continue
			}
			cij := float64(c0[i*ldc+j])
			want := float64(tc.alpha)*prod[i*tc.n+j] + float64(tc.beta)*cij
			bound := 2 * float64(tc.k+2) * eps * (math.Abs(float64(tc.alpha))*abs[i*tc.n+j] + math.Abs(float64(tc.beta)*cij))
			if diff := math.Abs(float64(got) - want); !(diff <= bound) {
				t.Fatalf("%v: C[%d][%d] = %g, want %g (diff %g > bound %g)", tc, i, j, got, want, diff, bound)
			}
		}
	}
}

// TestSgemmSmallShapes covers every size around each kernel's register tile
// (edge tiles) and around the 8-step blocks of the packing transposes.
func TestSgemmSmallShapes(t *testing.T) {
	for _, kern := range kernels() {
		t.Run(kern.name, func(t *testing.T) {
			mr, nr := kern.mr, kern.nr
			sizes := []int{0, 1, 2, 3, mr - 1, mr, mr + 1, 2*mr + 1, nr - 1, nr, nr + 1, 2*nr + 3}
			depths := []int{0, 1, 2, 7, 8, 9, 16, 17, 33}
			r := rand.New(rand.NewPCG(1, 2))
			for _, tA := range []bool{false, true} {
				for _, tB := range []bool{false, true} {
					for _, m := range sizes {
						for _, n := range sizes {
							for _, k := range depths {
								tc := gemmCase{transA: tA, transB: tB, m: m, n: n, k: k,
									pad: (m + n + k) % 3, alpha: 1, beta: 0}
								switch (m + 2*n + 3*k) % 4 { // spread alpha/beta over the shapes
								case 1:
									tc.beta = 1
								case 2:
									tc.alpha, tc.beta = -1.5, 0.7
								case 3:
									tc.alpha, tc.beta = 0.5, 0
								}
								check(t, r, kern, 1+(m+n)%3, tc)
							}
						}
					}
				}
			}
		})
	}
}

func TestSgemmScalars(t *testing.T) {
	scalars := []float32{0, 1, -1.5}
	for _, kern := range kernels() {
		t.Run(kern.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, 4))
			for _, alpha := range scalars {
				for _, beta := range scalars {
					for _, tA := range []bool{false, true} {
						for _, tB := range []bool{false, true} {
							check(t, r, kern, 2, gemmCase{tA, tB, 37, 53, 29, 4, alpha, beta})
							check(t, r, kern, 1, gemmCase{tA, tB, 9, 11, 0, 1, alpha, beta})
						}
					}
				}
			}
		})
	}
}

// TestSgemmLarge crosses every cache-block boundary (kc, mc, nc) and the
// parallel split, with the shapes of the networks among them.
func TestSgemmLarge(t *testing.T) {
	cases := []gemmCase{
		{false, false, 32, 784, 288, 0, 1, 0},
		{false, false, 64, 500, 340, 3, 1, 1},
		{false, true, 40, 1100, 330, 0, 1, 1},
		{true, false, 288, 400, 32, 0, 1, 0},
		{true, true, 131, 67, 520, 5, 0.5, -2},
		{false, false, 301, 90, 257, 1, -1, 0.25},
		{false, false, 7, 4200, 3, 0, 1, 0},
		{true, false, 512, 128, 3, 0, 1, 0},
		{false, true, 3, 5000, 1, 2, 2, 1},
		{false, false, 1, 1, 1<<18 + 3, 0, 1, 0}, // parallel-sized yet one tile
		{true, true, 2, 3, 50000, 1, 1, 1},
	}
	for _, kern := range kernels() {
		t.Run(kern.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(5, 6))
			for _, tc := range cases {
				for _, threads := range []int{1, 2, 3} {
					check(t, r, kern, threads, tc)
				}
			}
		})
	}
}

// TestSgemmConcurrent calls Sgemm from several goroutines at once, each with
// parallel-sized problems, and checks that none leaves a goroutine behind.
func TestSgemmConcurrent(t *testing.T) {
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 3 {
				check(t, r, defaultKernel, 2+i, gemmCase{i%2 == 0, g%2 == 0, 64 + g, 96 + i, 80, g, 1, float32(i)})
			}
		}()
	}
	wg.Wait()
	checkNoLeak(t, before)
}

// checkNoLeak fails if goroutines beyond the baseline are still running once
// their exit has had time to be scheduled.
func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left running, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSgemmNoGoroutinesLeftAfterReturn(t *testing.T) {
	before := runtime.NumGoroutine()
	a := make([]float32, 128*128)
	c := make([]float32, 128*128)
	Sgemm(false, false, 128, 128, 128, 1, a, 128, a, 128, 0, c, 128)
	checkNoLeak(t, before)
}

func TestSgemmNoAllocs(t *testing.T) {
	a := make([]float32, 256*512)
	c := make([]float32, 256*512)
	for _, threads := range []int{1, 2} {
		n := testing.AllocsPerRun(20, func() {
			sgemm(defaultKernel, threads, false, true, 256, 256, 512, 1, a, 512, a, 512, 0, c, 512)
		})
		if n != 0 {
			t.Errorf("threads=%d: %v allocations per call, want 0", threads, n)
		}
	}
}

func TestSgemmBadArgsPanic(t *testing.T) {
	buf := make([]float32, 100)
	tests := []struct {
		name string
		call func()
	}{
		{"negative m", func() { Sgemm(false, false, -1, 2, 2, 1, buf, 2, buf, 2, 0, buf, 2) }},
		{"short a", func() { Sgemm(false, false, 20, 2, 10, 1, buf, 10, buf, 2, 0, buf, 2) }},
		{"short b", func() { Sgemm(false, true, 2, 20, 10, 1, buf, 10, buf, 10, 0, buf, 20) }},
		{"short c", func() { Sgemm(false, false, 9, 12, 2, 1, buf, 2, buf, 12, 0, buf, 12) }},
		{"lda below width", func() { Sgemm(false, false, 2, 2, 3, 1, buf, 2, buf, 2, 0, buf, 2) }},
		{"ldc below width", func() { Sgemm(false, false, 2, 3, 2, 1, buf, 2, buf, 3, 0, buf, 2) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tt.call()
		})
	}
}

func TestDgemm(t *testing.T) {
	tests := []struct {
		transA, transB bool
		m, n, k        int
	}{
		{false, false, 3, 4, 5},
		{true, true, 7, 2, 3},
		{false, true, 1, 1, 1},
		{true, false, 0, 3, 2},
	}
	r := rand.New(rand.NewPCG(8, 9))
	for _, tt := range tests {
		ar, ac := tt.m, tt.k
		if tt.transA {
			ar, ac = tt.k, tt.m
		}
		br, bc := tt.k, tt.n
		if tt.transB {
			br, bc = tt.n, tt.k
		}
		a32, b32 := randMat(r, ar, ac, max(1, ac)), randMat(r, br, bc, max(1, bc))
		a, b := make([]float64, len(a32)), make([]float64, len(b32))
		for i, v := range a32 {
			a[i] = float64(v)
		}
		for i, v := range b32 {
			b[i] = float64(v)
		}
		c := make([]float64, tt.m*tt.n)
		for i := range c {
			c[i] = math.NaN()
		}
		Dgemm(tt.transA, tt.transB, tt.m, tt.n, tt.k, 2, a, max(1, ac), b, max(1, bc), 0, c, max(1, tt.n))
		want, _ := refGemm(tt.transA, tt.transB, tt.m, tt.n, tt.k, a32, max(1, ac), b32, max(1, bc))
		for i := range c {
			if math.Abs(c[i]-2*want[i]) > 1e-12*(1+math.Abs(want[i])) {
				t.Fatalf("%+v: C[%d] = %g, want %g", tt, i, c[i], 2*want[i])
			}
		}
	}
}
