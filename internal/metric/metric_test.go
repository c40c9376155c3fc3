package metric

import (
	"math"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// gauss draws n vectors of N(mean, diag(std²)).
func gauss(key uint64, n int, mean, std []float64) []float32 {
	r := keyrand.New(key)
	d := len(mean)
	x := make([]float32, n*d)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			x[i*d+j] = float32(mean[j] + std[j]*r.Norm())
		}
	}
	return x
}

func TestFrechetClosedForms(t *testing.T) {
	// For 2×2 covariances tr((Σa^½ Σb Σa^½)^½) = tr((ΣaΣb)^½) = √(tr(ΣaΣb) + 2√(det Σa·det Σb)).
	twoByTwo := func(ma, mb, a, b []float64) float64 {
		tab := a[0]*b[0] + a[1]*b[2] + a[2]*b[1] + a[3]*b[3]
		det := (a[0]*a[3] - a[1]*a[2]) * (b[0]*b[3] - b[1]*b[2])
		dm := (ma[0]-mb[0])*(ma[0]-mb[0]) + (ma[1]-mb[1])*(ma[1]-mb[1])
		return dm + a[0] + a[3] + b[0] + b[3] - 2*math.Sqrt(tab+2*math.Sqrt(det))
	}
	for _, c := range []struct {
		name string
		a, b Gaussian
		want float64
	}{
		{"same", Gaussian{Mean: []float64{1, 2}, Cov: []float64{2, 0.5, 0.5, 1}}, Gaussian{Mean: []float64{1, 2}, Cov: []float64{2, 0.5, 0.5, 1}}, 0},
		{"diagonal", Gaussian{Mean: []float64{0, 0, 1}, Cov: []float64{4, 0, 0, 0, 1, 0, 0, 0, 9}}, Gaussian{Mean: []float64{1, 2, 1}, Cov: []float64{1, 0, 0, 0, 1, 0, 0, 0, 1}},
			// ‖Δμ‖² + Σ(√a − √b)² = 5 + (1 + 0 + 4)
			10},
		{"correlated", Gaussian{Mean: []float64{0, 1}, Cov: []float64{2, 0.8, 0.8, 1}}, Gaussian{Mean: []float64{0.5, -1}, Cov: []float64{1, -0.3, -0.3, 3}},
			twoByTwo([]float64{0, 1}, []float64{0.5, -1}, []float64{2, 0.8, 0.8, 1}, []float64{1, -0.3, -0.3, 3})},
		{"singular", Gaussian{Mean: []float64{0, 0}, Cov: []float64{1, 0, 0, 0}}, Gaussian{Mean: []float64{3, 0}, Cov: []float64{0, 0, 0, 1}}, 9 + 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, order := range [][2]Gaussian{{c.a, c.b}, {c.b, c.a}} {
				got, err := Frechet(order[0], order[1])
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(got-c.want) > 1e-9*math.Max(1, c.want) {
					t.Errorf("Frechet = %.12g, want %.12g", got, c.want)
				}
			}
		})
	}
	if _, err := Frechet(Gaussian{Mean: []float64{0}, Cov: []float64{1}}, Gaussian{Mean: []float64{0, 0}, Cov: []float64{1, 0, 0, 1}}); err == nil {
		t.Error("dimension mismatch accepted")
	}
}

// TestFitAndFrechet: Fit recovers a known Gaussian, and the FID of two
// samples of the same one falls with n while a shifted one stays at ‖Δμ‖².
func TestFitAndFrechet(t *testing.T) {
	mean, std := []float64{1, -2, 0.5, 3}, []float64{1, 0.5, 2, 1}
	x := gauss(1, 20000, mean, std)
	g, err := Fit(x, 4)
	if err != nil {
		t.Fatal(err)
	}
	for j := range mean {
		if math.Abs(g.Mean[j]-mean[j]) > 0.05 || math.Abs(g.Cov[j*4+j]-std[j]*std[j]) > 0.1*std[j]*std[j] {
			t.Errorf("dimension %d: mean %.3f var %.3f, want %.3f %.3f", j, g.Mean[j], g.Cov[j*4+j], mean[j], std[j]*std[j])
		}
	}
	if g.N != 20000 || math.Abs(g.Cov[1]-g.Cov[4]) > 0 {
		t.Errorf("n %d, covariance not symmetric: %v %v", g.N, g.Cov[1], g.Cov[4])
	}
	same, _ := Fit(gauss(2, 20000, mean, std), 4)
	shifted := slices.Clone(mean)
	shifted[0] += 2
	other, _ := Fit(gauss(3, 20000, shifted, std), 4)
	f0, _ := Frechet(g, same)
	f1, _ := Frechet(g, other)
	if f0 > 0.05 || math.Abs(f1-4) > 0.2 {
		t.Errorf("FID same %.4f (want ≈ 0), shifted by 2: %.4f (want ≈ 4)", f0, f1)
	}
	// Exact on a small set: points ±1 on each axis.
	h, err := Fit([]float32{1, 0, -1, 0, 0, 1, 0, -1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Mean, []float64{0, 0}) || !slices.Equal(h.Cov, []float64{2.0 / 3, 0, 0, 2.0 / 3}) {
		t.Errorf("fit %+v", h)
	}
	if _, err := Fit([]float32{1, 2}, 2); err == nil {
		t.Error("one vector accepted")
	}
}

// mmd2 is the unbiased MMD² of all of x and y under KID's kernel, directly in float64.
func mmd2(x, y []float32, d int) float64 {
	k := func(a, b []float32) float64 {
		var dot float64
		for i := range a {
			dot += float64(a[i]) * float64(b[i])
		}
		v := dot/float64(d) + 1
		return v * v * v
	}
	within := func(s []float32) float64 {
		n := len(s) / d
		var t float64
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				if i != j {
					t += k(s[i*d:(i+1)*d], s[j*d:(j+1)*d])
				}
			}
		}
		return t / float64(n*(n-1))
	}
	var cross float64
	nx, ny := len(x)/d, len(y)/d
	for i := 0; i < nx; i++ {
		for j := 0; j < ny; j++ {
			cross += k(x[i*d:(i+1)*d], y[j*d:(j+1)*d])
		}
	}
	return within(x) + within(y) - 2*cross/float64(nx*ny)
}

func TestKID(t *testing.T) {
	const d = 16
	zero, one := make([]float64, d), make([]float64, d)
	ones := make([]float64, d)
	for j := range ones {
		ones[j], one[j] = 1, 0.3
	}
	t.Run("point masses", func(t *testing.T) {
		// Every pair is the same pair: KID = k(a,a) + k(b,b) − 2k(a,b) exactly.
		a, b := []float32{1, 2}, []float32{-1, 0.5}
		x := slices.Concat(a, a, a, a)
		y := slices.Concat(b, b, b)
		k := func(p, q []float32) float64 { v := float64(p[0]*q[0]+p[1]*q[1])/2 + 1; return v * v * v }
		got, std, err := KID(x, y, 2, KIDOptions{Subsets: 5})
		want := k(a, a) + k(b, b) - 2*k(a, b)
		if err != nil || math.Abs(got-want) > 1e-5*want || std > 1e-5*want {
			t.Errorf("KID %v ± %v (%v), want %v ± 0", got, std, err, want)
		}
	})
	t.Run("whole sets equal the direct estimate", func(t *testing.T) {
		x := gauss(4, 300, zero, ones)
		y := gauss(5, 200, one, ones)
		got, std, err := KID(x, y, d, KIDOptions{Subsets: 3, SubsetSize: 200, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		// With subsets as large as y, y is whole in every subset; x is not, so
		// compare with subsets of 200 of x directly: the mean over the 3 must
		// lie within the spread of x's subsets around the full estimate.
		want := mmd2(x, y, d)
		if math.Abs(got-want) > 3*std+1e-6 {
			t.Errorf("KID %.6g ± %.3g, direct MMD² %.6g", got, std, want)
		}
		sq, _, err := KID(x[:200*d], y, d, KIDOptions{Subsets: 2, SubsetSize: 200})
		if want := mmd2(x[:200*d], y, d); err != nil || math.Abs(sq-want) > 1e-6*math.Abs(want)+1e-9 {
			t.Errorf("whole sets: KID %.9g, direct %.9g (%v)", sq, want, err)
		}
	})
	t.Run("same and shifted distributions", func(t *testing.T) {
		ref := gauss(6, 4000, zero, ones)
		same, sstd, _ := KID(gauss(7, 2000, zero, ones), ref, d, KIDOptions{SubsetSize: 500})
		shift, _, _ := KID(gauss(8, 2000, one, ones), ref, d, KIDOptions{SubsetSize: 500})
		t.Logf("same %.5f ± %.5f, shifted %.5f", same, sstd, shift)
		if math.Abs(same) > 3*sstd+1e-4 || shift < 0.05 {
			t.Errorf("same distribution %.5f ± %.5f, shifted %.5f", same, sstd, shift)
		}
		again, _, _ := KID(gauss(7, 2000, zero, ones), ref, d, KIDOptions{SubsetSize: 500})
		if again != same {
			t.Error("not reproducible")
		}
	})
	for _, bad := range []struct {
		x, y []float32
		d    int
		want string
	}{
		{[]float32{1, 2, 3}, []float32{1, 2}, 2, "not vectors"},
		{[]float32{1, 2}, []float32{1, 2, 3, 4}, 2, "at least 2"},
		{[]float32{1, 2}, []float32{1, 2}, 0, "dimension"},
	} {
		if _, _, err := KID(bad.x, bad.y, bad.d, KIDOptions{}); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("KID(%v, %v, %d): %v, want %q", bad.x, bad.y, bad.d, err, bad.want)
		}
	}
}

func TestEnergy(t *testing.T) {
	// Point masses: 2‖a − b‖, the within terms vanish.
	got, err := Energy([]float32{0, 0, 0, 0, 0, 0}, []float32{3, 4, 3, 4}, 2, -1)
	if err != nil || math.Abs(got-10) > 1e-12 {
		t.Errorf("point masses: %v (%v), want 10", got, err)
	}
	// 1-D N(0,1) against N(μ,1): X−Y ~ N(−μ, 2), so E|X−Y| = 2φ(μ/√2)·√2 + μ(2Φ(μ/√2) − 1)
	// and E|X−X'| = 2/√π.
	const mu = 1.0
	s := math.Sqrt2
	phi := math.Exp(-mu*mu/(2*s*s)) / math.Sqrt(2*math.Pi)
	cdf := 0.5 * (1 + math.Erf(mu/(s*math.Sqrt2)))
	want := 2*(s*2*phi+mu*(2*cdf-1)) - 2*2/math.Sqrt(math.Pi)
	// The estimate's standard deviation is about 0.02 at n = 8000.
	x := gauss(9, 8000, []float64{0}, []float64{1})
	y := gauss(10, 8000, []float64{mu}, []float64{1})
	got, err = Energy(x, y, 1, -1)
	if err != nil || math.Abs(got-want) > 0.08 {
		t.Errorf("N(0,1) vs N(1,1): %.4f (%v), want %.4f", got, err, want)
	}
	// Between samples of one distribution the estimate's spread is O(1/n), not O(1/√n).
	same, _ := Energy(gauss(11, 8000, []float64{0}, []float64{1}), x, 1, WithinDistance(x, 1))
	if math.Abs(same) > 0.005 {
		t.Errorf("same distribution: %.4f, want ≈ 0", same)
	}
	// A precomputed within term gives the same result.
	pre, _ := Energy(x, y, 1, WithinDistance(y, 1))
	if math.Abs(pre-got) > 1e-12 {
		t.Errorf("with precomputed within term %v, without %v", pre, got)
	}
	if _, err := Energy([]float32{1}, []float32{1, 2}, 1, -1); err == nil {
		t.Error("one point accepted")
	}
}

func TestNearest(t *testing.T) {
	const d, k = 5, 3
	r := keyrand.New(12)
	rand := func(n int) []float32 {
		v := make([]float32, n*d)
		for i := range v {
			v[i] = float32(r.Float64())
		}
		return v
	}
	q, refs := rand(300), rand(1000)
	s, err := NewNearest(q, d, k)
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsInf(s.MeanDistance(), 1) {
		t.Error("mean distance before any reference is not +Inf")
	}
	// Chunks of uneven sizes, as a caller streaming a data set adds them.
	for lo := 0; lo < 1000; {
		hi := min(1000, lo+1+r.IntN(300))
		if err := s.Add(refs[lo*d:hi*d], lo); err != nil {
			t.Fatal(err)
		}
		lo = hi
	}
	var mean float64
	for i := 0; i < 300; i++ {
		type nd struct {
			j int
			e float64
		}
		all := make([]nd, 1000)
		for j := range all {
			var e float64
			for t := 0; t < d; t++ {
				x := float64(q[i*d+t]) - float64(refs[j*d+t])
				e += x * x
			}
			all[j] = nd{j, math.Sqrt(e)}
		}
		sort.Slice(all, func(a, b int) bool { return all[a].e < all[b].e })
		idx, dist := s.Neighbours(i)
		for p := 0; p < k; p++ {
			if idx[p] != all[p].j || math.Abs(dist[p]-all[p].e) > 1e-12 {
				t.Fatalf("query %d: neighbours %v at %v, want %v", i, idx, dist, all[:k])
			}
		}
		mean += all[0].e
	}
	if got := s.MeanDistance(); math.Abs(got-mean/300) > 1e-12 {
		t.Errorf("mean distance %v, want %v", got, mean/300)
	}
	few, _ := NewNearest(q[:d], d, k)
	few.Add(refs[:2*d], 7)
	if idx, _ := few.Neighbours(0); len(idx) != 2 || idx[0] < 7 || idx[1] < 7 {
		t.Errorf("two references added at offset 7: neighbours %v", idx)
	}
	if _, err := NewNearest(q, d, 0); err == nil {
		t.Error("k = 0 accepted")
	}
	if err := s.Add(refs[:d+1], 0); err == nil {
		t.Error("ragged references accepted")
	}
}
