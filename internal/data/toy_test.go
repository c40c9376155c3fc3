package data

import (
	"math"
	"slices"
	"testing"
)

func TestGMMScoreMatchesFiniteDifferences(t *testing.T) {
	mixtures := []struct {
		name    string
		means   [][]float64
		weights []float64
		std     float64
	}{
		{"paper", [][]float64{{-5, -5}, {5, 5}}, []float64{0.2, 0.8}, 1},
		{"three 2-D", [][]float64{{0, 3}, {-2, -1}, {4, 0.5}}, []float64{0.5, 0.3, 0.2}, 0.7},
		{"1-D with zero weight", [][]float64{{-1}, {2}}, []float64{0, 1}, 0.3},
		{"3-D", [][]float64{{1, 2, 3}, {-1, 0, 1}}, []float64{0.6, 0.4}, 1.5},
	}
	points := [][]float64{{0, 0, 0}, {-5, -5, 1}, {5.3, 4.1, -2}, {1, -3, 0.5}, {40, -30, 12}}
	sigmas := []float64{0, 0.01, 0.1, 1, 20}
	const h = 1e-5
	for _, m := range mixtures {
		g, err := NewGMM(m.means, m.weights, m.std)
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		d := g.Dim()
		for _, p := range points {
			x := slices.Clone(p[:d])
			for _, sigma := range sigmas {
				got := make([]float64, d)
				g.Score(x, sigma, got)
				for j := range d {
					xp, xm := slices.Clone(x), slices.Clone(x)
					xp[j] += h
					xm[j] -= h
					want := (g.LogDensity(xp, sigma) - g.LogDensity(xm, sigma)) / (2 * h)
					if tol := 1e-5 * (1 + math.Abs(want)); math.Abs(got[j]-want) > tol || math.IsNaN(got[j]) {
						t.Errorf("%s x=%v σ=%g: score[%d] = %.9g, finite difference %.9g", m.name, x, sigma, j, got[j], want)
					}
				}
			}
		}
	}
}

// TestGMMLogDensityIntegrates checks LogDensity's normalisation, which the
// finite-difference test cannot see.
func TestGMMLogDensityIntegrates(t *testing.T) {
	g, err := NewGMM([][]float64{{-5, -5}, {5, 5}}, []float64{0.2, 0.8}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, sigma := range []float64{0, 0.5, 2} {
		const lim, step = 20.0, 0.05
		var total float64
		for x := -lim; x < lim; x += step {
			for y := -lim; y < lim; y += step {
				total += math.Exp(g.LogDensity([]float64{x + step/2, y + step/2}, sigma)) * step * step
			}
		}
		if math.Abs(total-1) > 1e-3 {
			t.Errorf("σ=%g: ∫ p_σ = %.6f, want 1", sigma, total)
		}
	}
}

func TestGMMSamples(t *testing.T) {
	cfg := Config{Name: "gmm", TrainSize: 40000, TestSize: 100}
	train, test, err := Open(cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	if got := train.Shape(); !slices.Equal(got, []int{2}) {
		t.Fatalf("Shape = %v", got)
	}
	g := train.(*Points).Mixture()
	if g == nil || g.Components() != 2 || g.Weight(1) != 0.8 || !slices.Equal(g.Mean(0), []float64{-5, -5}) {
		t.Fatalf("Mixture() = %+v, want the paper's toy", g)
	}
	counts := make([]int, g.Components())
	sums := make([][2]float64, g.Components())
	sq := make([]float64, g.Components())
	x := make([]float32, 2)
	for i := range train.Len() {
		train.Example(i, x)
		k := g.Nearest([]float64{float64(x[0]), float64(x[1])})
		counts[k]++
		sums[k][0] += float64(x[0])
		sums[k][1] += float64(x[1])
		mu := g.Mean(k)
		sq[k] += (float64(x[0])-mu[0])*(float64(x[0])-mu[0]) + (float64(x[1])-mu[1])*(float64(x[1])-mu[1])
	}
	n := float64(train.Len())
	for k := range counts {
		frac := float64(counts[k]) / n
		// 5 standard errors of a binomial proportion.
		if se := math.Sqrt(g.Weight(k) * (1 - g.Weight(k)) / n); math.Abs(frac-g.Weight(k)) > 5*se {
			t.Errorf("component %d has %.4f of the samples, want %.2f", k, frac, g.Weight(k))
		}
		mu := g.Mean(k)
		for j := range 2 {
			if m := sums[k][j] / float64(counts[k]); math.Abs(m-mu[j]) > 0.05 {
				t.Errorf("component %d mean[%d] = %.3f, want %.1f", k, j, m, mu[j])
			}
		}
		if v := sq[k] / float64(counts[k]) / 2; math.Abs(v-1) > 0.05 {
			t.Errorf("component %d variance %.3f, want 1", k, v)
		}
	}
	// The held-out split is drawn from other keys.
	y := make([]float32, 2)
	train.Example(0, x)
	test.Example(0, y)
	if slices.Equal(x, y) {
		t.Errorf("train and test example 0 are equal: %v", x)
	}
}

func TestToyShapes(t *testing.T) {
	tests := []struct {
		name string
		// ok reports whether a point belongs to the toy (within noise).
		ok func(x, y float64) bool
	}{
		{"rings", func(x, y float64) bool {
			r := math.Hypot(x, y)
			return math.Abs(r-ringInner) < 0.6 || math.Abs(r-ringOuter) < 0.6
		}},
		{"moons", func(x, y float64) bool {
			// Undo the scaling: the upper moon is the unit half circle around
			// (0,0), the lower one around (1, 0.5).
			u, v := x/moonsScale+0.5, y/moonsScale+0.25
			return math.Abs(math.Hypot(u, v)-1) < 0.25 || math.Abs(math.Hypot(u-1, v-0.5)-1) < 0.25
		}},
		{"checkerboard", func(x, y float64) bool {
			if math.Abs(x) > checkerHalf || math.Abs(y) > checkerHalf {
				return false
			}
			col, row := int((x+checkerHalf)/2), int((y+checkerHalf)/2)
			return (col+row)%2 == 0
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			train, test, err := Open(Config{Name: tt.name, TrainSize: 5000, TestSize: 50}, 3)
			if err != nil {
				t.Fatal(err)
			}
			if train.Len() != 5000 || test.Len() != 50 {
				t.Fatalf("Len = %d, %d", train.Len(), test.Len())
			}
			x, y := make([]float32, 2), make([]float32, 2)
			bad := 0
			var sx, sy float64
			for i := range train.Len() {
				train.Example(i, x)
				train.Example(i, y)
				if !slices.Equal(x, y) {
					t.Fatalf("example %d not deterministic: %v then %v", i, x, y)
				}
				if !tt.ok(float64(x[0]), float64(x[1])) {
					bad++
				}
				sx += float64(x[0])
				sy += float64(x[1])
			}
			// Gaussian noise puts a few points beyond the band.
			if bad > train.Len()/200 {
				t.Errorf("%d of %d points off the %s shape", bad, train.Len(), tt.name)
			}
			if n := float64(train.Len()); math.Abs(sx/n) > 0.3 || math.Abs(sy/n) > 0.3 {
				t.Errorf("centre (%.3f, %.3f), want near the origin", sx/n, sy/n)
			}
			other, _, err := Open(Config{Name: tt.name, TrainSize: 5000}, 4)
			if err != nil {
				t.Fatal(err)
			}
			train.Example(0, x)
			other.Example(0, y)
			if slices.Equal(x, y) {
				t.Errorf("seeds 3 and 4 give the same example 0: %v", x)
			}
		})
	}
}

func TestConfigGMM(t *testing.T) {
	if _, err := (Config{Name: "moons"}).GMM(); err == nil {
		t.Fatal("GMM() of moons succeeded")
	}
	g, err := Config{Name: "gmm", Means: [][]float64{{1, 2}}, Weights: []float64{1}, Std: 3}.GMM()
	if err != nil {
		t.Fatal(err)
	}
	if g.Std() != 3 || g.Components() != 1 || !slices.Equal(g.Mean(0), []float64{1, 2}) {
		t.Fatalf("GMM() = %+v", g)
	}
	out := make([]float64, 2)
	g.Score([]float64{4, 2}, 4, out)
	// One component: score = (μ − x)/(std² + σ²) = (-3, 0)/25.
	if math.Abs(out[0]+3.0/25) > 1e-15 || out[1] != 0 {
		t.Fatalf("Score = %v, want [-0.12 0]", out)
	}
}
