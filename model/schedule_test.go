package model

import (
	"math"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/keyrand"
)

func TestSigmasGeometric(t *testing.T) {
	c := NoiseConfig{SigmaMax: 20, SigmaMin: 0.01, Levels: 100}
	s := c.Sigmas()
	g := c.Ratio()
	for i := 1; i < len(s); i++ {
		if r := s[i-1] / s[i]; math.Abs(r-g) > 1e-12 {
			t.Fatalf("σ_%d/σ_%d = %v, Ratio %v", i, i+1, r, g)
		}
	}
}

// Technique 2 against the numbers NCSNv2 and the notes give: D = 784 (28×28)
// has γ ≈ 1.08 and σ 20 → 0.01 then needs L ≈ 100; CIFAR-10's D = 3072 with
// σ 50 → 0.01 gives L ≈ 232 in the paper (the rule's γ ≈ 1.04).
func TestRuleGamma(t *testing.T) {
	for _, tc := range []struct {
		dim                int
		sigmaMax, sigmaMin float64
		gamma              float64 // the rule's solution, ± 0.005
		levelsLo, levelsHi int
	}{
		{784, 20, 0.01, 1.082, 95, 101},
		{3072, 50, 0.01, 1.040, 215, 235},
		{256, 10, 0.01, 1.153, 45, 52},
	} {
		g, err := RuleGamma(tc.dim)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(g-tc.gamma) > 0.005 {
			t.Errorf("D=%d: γ = %v, want ≈ %v", tc.dim, g, tc.gamma)
		}
		if v := GammaRule(tc.dim, g); math.Abs(v-0.5) > 1e-9 {
			t.Errorf("D=%d: rule at γ = %v, want 0.5", tc.dim, v)
		}
		// A smaller ratio keeps more overlap between levels.
		if GammaRule(tc.dim, 1+(g-1)/2) <= 0.5 || GammaRule(tc.dim, 1+2*(g-1)) >= 0.5 {
			t.Errorf("D=%d: rule is not on the right side of 0.5 around γ = %v", tc.dim, g)
		}
		L := LevelsFor(tc.sigmaMax, tc.sigmaMin, g)
		if L < tc.levelsLo || L > tc.levelsHi {
			t.Errorf("D=%d, σ %v → %v: L = %d, want %d..%d", tc.dim, tc.sigmaMax, tc.sigmaMin, L, tc.levelsLo, tc.levelsHi)
		}
		// L is the fewest levels whose ratio does not exceed γ.
		if r := (NoiseConfig{SigmaMax: tc.sigmaMax, SigmaMin: tc.sigmaMin, Levels: L}).Ratio(); r > g {
			t.Errorf("D=%d: L = %d has ratio %v > γ %v", tc.dim, L, r, g)
		}
		if r := (NoiseConfig{SigmaMax: tc.sigmaMax, SigmaMin: tc.sigmaMin, Levels: L - 1}).Ratio(); r <= g {
			t.Errorf("D=%d: L−1 = %d already has ratio %v <= γ %v", tc.dim, L-1, r, g)
		}
	}
	for _, dim := range []int{1, 2, 4} {
		if _, err := RuleGamma(dim); err == nil || !strings.Contains(err.Error(), "at least 5") {
			t.Errorf("D=%d: err %v, want no solution", dim, err)
		}
	}
	// A ratio taken from a schedule gives back its own length.
	if L := LevelsFor(20, 0.01, (NoiseConfig{SigmaMax: 20, SigmaMin: 0.01, Levels: 100}).Ratio()); L != 100 {
		t.Errorf("LevelsFor the ratio of 100 levels = %d", L)
	}
}

// Technique 3 against the notes (σ 20 → 0.01, L = 100, T = 5: minimum ≈ 1.09
// at ε ≈ 1e-5) and NCSNv2's CIFAR-10 setting (σ 50 → 0.01, L = 232, T = 5:
// ε = 6.2e-6 in its config).
func TestTunedEps(t *testing.T) {
	for _, tc := range []struct {
		sigmaMax float64
		levels   int
		steps    int
		eps      float64 // ± 10%
		ratio    float64 // ± 0.005
	}{
		{20, 100, 5, 1.09e-5, 1.092},
		{50, 232, 5, 6.2e-6, 1.055},
	} {
		c := NoiseConfig{SigmaMax: tc.sigmaMax, SigmaMin: 0.01, Levels: tc.levels}
		eps, ratio, err := TunedEps(c.SigmaMin, c.Ratio(), tc.steps)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(eps/tc.eps-1) > 0.1 || math.Abs(ratio-tc.ratio) > 0.005 {
			t.Errorf("σ %v, L %d, T %d: ε = %.3g, ratio %.4f; want ≈ %.3g, %.3f", tc.sigmaMax, tc.levels, tc.steps, eps, ratio, tc.eps, tc.ratio)
		}
		// It is the minimum: both neighbours are worse.
		for _, f := range []float64{0.95, 1.05} {
			if r := StepRatio(eps*f, c.SigmaMin, c.Ratio(), tc.steps); r < ratio {
				t.Errorf("ε·%v gives ratio %v below the minimum %v", f, r, ratio)
			}
		}
	}
	// The limits the search relies on: γ² as ε → 0, 2 as ε → σ_L².
	if r := StepRatio(1e-16, 0.01, 1.1, 5); math.Abs(r-1.21) > 1e-6 {
		t.Errorf("ratio at ε → 0: %v, want γ² = 1.21", r)
	}
	if r := StepRatio(1e-4*(1-1e-9), 0.01, 1.1, 5); math.Abs(r-2) > 1e-6 {
		t.Errorf("ratio at ε → σ_L²: %v, want 2", r)
	}
	// More steps per level allow a smaller ε and get closer to 1.
	g := (NoiseConfig{SigmaMax: 20, SigmaMin: 0.01, Levels: 100}).Ratio()
	e5, r5, _ := TunedEps(0.01, g, 5)
	e100, r100, _ := TunedEps(0.01, g, 100)
	if !(e100 < e5 && r100 < r5) {
		t.Errorf("T=100: ε %v ratio %v; T=5: ε %v ratio %v", e100, r100, e5, r5)
	}
	for _, bad := range []struct {
		sigmaMin, gamma float64
		steps           int
	}{{0, 1.1, 5}, {0.01, 1, 5}, {0.01, 1.1, 0}, {math.NaN(), 1.1, 5}} {
		if _, _, err := TunedEps(bad.sigmaMin, bad.gamma, bad.steps); err == nil {
			t.Errorf("TunedEps(%v, %v, %d) succeeded", bad.sigmaMin, bad.gamma, bad.steps)
		}
	}
}

func TestMaxPairwiseDistance(t *testing.T) {
	// n points on a line, spaced by a vector of norm 0.5: the ends are farthest.
	line := func(n, dim int) []float32 {
		x := make([]float32, n*dim)
		for i := 0; i < n; i++ {
			for k := 0; k < dim; k++ {
				x[i*dim+k] = float32(i) * 0.25 // dim = 4: step norm 0.5
			}
		}
		return x
	}
	// The corners of the unit 4-cube: the first farthest pair is 0000 and 1111.
	cube := make([]float32, 16*4)
	for i := 0; i < 16; i++ {
		for k := 0; k < 4; k++ {
			cube[i*4+k] = float32(i >> (3 - k) & 1)
		}
	}
	// Random points (more than one block of rows) against a float64 brute force.
	r := keyrand.New(7)
	rnd := make([]float32, 600*9)
	for i := range rnd {
		rnd[i] = float32(r.Norm())
	}
	var want float64
	wi, wj := 0, 0
	for i := 0; i < 600; i++ {
		for j := i + 1; j < 600; j++ {
			var s float64
			for k := 0; k < 9; k++ {
				d := float64(rnd[i*9+k]) - float64(rnd[j*9+k])
				s += d * d
			}
			if s > want {
				want, wi, wj = s, i, j
			}
		}
	}
	for _, tc := range []struct {
		name   string
		x      []float32
		n, dim int
		dist   float64
		i, j   int
	}{
		{"line", line(600, 4), 600, 4, 599 * 0.5, 0, 599},
		{"cube", cube, 16, 4, 2, 0, 15},
		{"random", rnd, 600, 9, math.Sqrt(want), wi, wj},
		{"two", []float32{0, 0, 3, 4}, 2, 2, 5, 0, 1},
	} {
		d, i, j, err := MaxPairwiseDistance(tc.x, tc.n, tc.dim)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(d-tc.dist) > 1e-9*tc.dist || i != tc.i || j != tc.j {
			t.Errorf("%s: %v between %d and %d, want %v between %d and %d", tc.name, d, i, j, tc.dist, tc.i, tc.j)
		}
	}
	for _, bad := range []struct {
		x      []float32
		n, dim int
	}{{[]float32{1, 2}, 1, 2}, {[]float32{1, 2, 3}, 2, 2}, {nil, 0, 3}} {
		if _, _, _, err := MaxPairwiseDistance(bad.x, bad.n, bad.dim); err == nil {
			t.Errorf("%d examples of %d in %d values: no error", bad.n, bad.dim, len(bad.x))
		}
	}
}
