package gemm

import (
	"math/rand/v2"
	"testing"
)

// TestSgemmBatch: each product of a batch equals, bit for bit, a one-goroutine
// Sgemm of the same operands (which check tests against float64), and the
// gaps between C's products are left untouched.
func TestSgemmBatch(t *testing.T) {
	cases := []gemmCase{
		{false, false, 49, 32, 32, 0, 1, 0},
		{false, true, 20, 64, 32, 3, 1, 0},
		{true, false, 32, 32, 49, 0, 1, 1},
		{false, true, 17, 9, 64, 1, -0.5, 0.5},
		{false, false, 3, 5, 0, 0, 1, 0.5},
	}
	const count = 4
	for _, kern := range kernels() {
		t.Run(kern.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(11, 12))
			for _, tc := range cases {
				ar, ac := tc.m, tc.k
				if tc.transA {
					ar, ac = tc.k, tc.m
				}
				br, bc := tc.k, tc.n
				if tc.transB {
					br, bc = tc.n, tc.k
				}
				lda, ldb, ldc := max(1, ac+tc.pad), max(1, bc+tc.pad), tc.n+tc.pad
				// Strides leave a gap of 5 values after each operand.
				sa, sb, sc := ar*lda+5, br*ldb+5, tc.m*ldc+5
				a, b, c := randMat(r, count, sa, sa), randMat(r, count, sb, sb), randMat(r, count, sc, sc)
				want := append([]float32(nil), c...)
				for i := range count {
					sgemm(kern, 1, tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, a[i*sa:], lda, b[i*sb:], ldb, tc.beta, want[i*sc:], ldc)
				}
				sgemmBatch(kern, tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, a, lda, sa, b, ldb, sb, tc.beta, c, ldc, sc, count)
				for i := range c {
					if c[i] != want[i] {
						t.Fatalf("%v: c[%d] = %g, want %g", tc, i, c[i], want[i])
					}
				}
			}
		})
	}
}

// TestSgemmBatchPacked: products with B packed beforehand equal, bit for bit,
// the same products packing B themselves, across kc and nc block boundaries.
func TestSgemmBatchPacked(t *testing.T) {
	type shape struct {
		transA, transB bool
		m, n, k        int
		alpha, beta    float32
	}
	const count = 3
	for _, kern := range kernels() {
		t.Run(kern.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(13, 14))
			for _, s := range []shape{
				{false, true, 56, 32, 32, 1, 0},
				{false, false, 9, 40, kern.kc + 44, 1, 1},
				{true, true, 20, kern.nc + 5, 20, -2, 0.5},
				{false, false, 5, 3, 0, 1, 0.5},
			} {
				ar, ac := s.m, s.k
				if s.transA {
					ar, ac = s.k, s.m
				}
				br, bc := s.k, s.n
				if s.transB {
					br, bc = s.n, s.k
				}
				sa, sb, sc := ar*ac+3, br*bc+2, s.m*s.n+1
				a, b, c := randMat(r, count, sa, sa), randMat(r, count, sb, sb), randMat(r, count, sc, sc)
				want := append([]float32(nil), c...)
				sgemmBatch(kern, s.transA, s.transB, s.m, s.n, s.k, s.alpha, a, ac, sa, b, bc, sb, s.beta, want, s.n, sc, count)
				pb := newPackedB(kern, s.k, s.n, count)
				for i := range count {
					pb.Pack(i, s.transB, b[i*sb:], bc)
				}
				SgemmBatchPacked(s.transA, s.m, s.alpha, a, ac, sa, pb, s.beta, c, s.n, sc)
				for i := range c {
					if c[i] != want[i] {
						t.Fatalf("%+v: c[%d] = %g, want %g", s, i, c[i], want[i])
					}
				}
			}
		})
	}
}

// TestCaches: whatever CPUID reports (or does not), the sizes the blocking
// uses are positive and ordered.
func TestCaches(t *testing.T) {
	c := Caches()
	t.Logf("%+v", c)
	if c.L1 <= 0 || c.L2 < c.L1 {
		t.Fatalf("cache sizes %+v", c)
	}
	if got := (CacheSizes{}).fill(); got != fallbackCaches {
		t.Fatalf("unknown sizes filled to %+v, want %+v", got, fallbackCaches)
	}
}

// TestBlocked: the blocking derived from cache sizes keeps the B micro-panel
// in half the L1 and the A and B blocks in half the L2 each, in whole tiles,
// on the CPU classes the kernels target.
func TestBlocked(t *testing.T) {
	for _, c := range []struct {
		name  string
		cache CacheSizes
	}{
		{"zen1", CacheSizes{L1: 32 << 10, L2: 512 << 10}},
		{"skylake client", CacheSizes{L1: 32 << 10, L2: 256 << 10}},
		{"zen5", CacheSizes{L1: 48 << 10, L2: 1 << 20}},
		{"tiny", CacheSizes{L1: 4 << 10, L2: 16 << 10}},
	} {
		for _, mr := range []struct{ mr, nr int }{{6, 16}, {8, 32}, {4, 4}} {
			k := blocked(&kernel{mr: mr.mr, nr: mr.nr}, c.cache)
			t.Logf("%s %d×%d: kc %d, mc %d, nc %d", c.name, mr.mr, mr.nr, k.kc, k.mc, k.nc)
			if k.kc%8 != 0 || k.mc%k.mr != 0 || k.nc%k.nr != 0 || k.kc < 64 || k.mc < k.mr || k.nc < k.nr {
				t.Errorf("%s %d×%d: kc %d, mc %d, nc %d not in whole units", c.name, mr.mr, mr.nr, k.kc, k.mc, k.nc)
			}
			if c.name == "tiny" {
				continue // the lower bounds win over the caches
			}
			if 4*k.kc*k.nr > c.cache.L1/2 || 4*k.mc*k.kc > c.cache.L2/2 || 4*k.kc*k.nc > c.cache.L2/2 {
				t.Errorf("%s %d×%d: kc %d, mc %d, nc %d overflow the caches", c.name, mr.mr, mr.nr, k.kc, k.mc, k.nc)
			}
		}
	}
	// Zen 1 with the AVX2 kernel: BLIS's Haswell blocking (kc 256) falls out.
	if k := blocked(&kernel{mr: 6, nr: 16}, CacheSizes{L1: 32 << 10, L2: 512 << 10}); k.kc != 256 || k.mc != 252 || k.nc != 256 {
		t.Errorf("zen1 avx2: kc %d, mc %d, nc %d; want 256, 252, 256", k.kc, k.mc, k.nc)
	}
}
