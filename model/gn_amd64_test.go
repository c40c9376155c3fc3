package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestGNAVX512MatchesGo runs the float32 GroupNorm+SiLU forward and backward
// with and without the AVX-512 loops, on channel counts that exercise the
// 16-lane steps and the masked tails, and compares every output.
func TestGNAVX512MatchesGo(t *testing.T) {
	if !hasAVX512 {
		t.Skip("no AVX-512F")
	}
	for _, tc := range []struct{ c, g, p int }{{4, 2, 9}, {8, 4, 5}, {20, 4, 7}, {32, 8, 49}, {64, 8, 3}} {
		r := rand.New(rand.NewPCG(uint64(tc.c), 1))
		const batch = 2
		n := batch * tc.p * tc.c
		rnd := func(n int, scale, shift float64) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(r.NormFloat64()*scale + shift)
			}
			return v
		}
		x, dy := rnd(n, 3, 1), rnd(n, 1, 0)
		gamma, beta := rnd(tc.c, 1, 1), rnd(tc.c, 1, 0)
		run := func(simd bool) (y, sig, dx, dg, db []float32) {
			defer func(v bool) { hasAVX512 = v }(hasAVX512)
			hasAVX512 = simd
			st := &gnState[float32]{B: batch, P: tc.p, C: tc.c, G: tc.g,
				mean: make([]float32, batch*tc.g), rstd: make([]float32, batch*tc.g), sig: make([]float32, n)}
			y, dx, dg, db = make([]float32, n), make([]float32, n), make([]float32, tc.c), make([]float32, tc.c)
			tmp := make([]float32, 4*tc.c)
			for s := 0; s < batch; s++ {
				gnForward(st, s, x, gamma, beta, y, st.sig[s*tc.p*tc.c:(s+1)*tc.p*tc.c], tmp)
			}
			for s := 0; s < batch; s++ {
				gnBackward(st, s, x, gamma, beta, dy, dx, dg, db, tmp)
			}
			return y, st.sig, dx, dg, db
		}
		y0, s0, dx0, dg0, db0 := run(false)
		y1, s1, dx1, dg1, db1 := run(true)
		for _, o := range []struct {
			name      string
			want, got []float32
		}{{"y", y0, y1}, {"sig", s0, s1}, {"dx", dx0, dx1}, {"dgamma", dg0, dg1}, {"dbeta", db0, db1}} {
			var scale float64
			for _, v := range o.want {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			for i := range o.want {
				if d := math.Abs(float64(o.got[i] - o.want[i])); d > 1e-5*scale {
					t.Fatalf("c=%d %s[%d] = %g with AVX-512, %g without", tc.c, o.name, i, o.got[i], o.want[i])
				}
			}
		}
	}
}
