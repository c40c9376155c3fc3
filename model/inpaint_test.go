package model

import (
	"context"
	"math"
	"slices"
	"testing"
)

// gaussScore is the exact score of N(0, Σ) noised by σ, with Σ = [[1, ρ], [ρ, 1]]:
// −(Σ + σ²I)⁻¹x.
type gaussScore struct{ rho float64 }

func (g gaussScore) Score(x, sigma, out []float32) error {
	for b := range sigma {
		v := 1 + float64(sigma[b])*float64(sigma[b])
		det := v*v - g.rho*g.rho
		x0, x1 := float64(x[2*b]), float64(x[2*b+1])
		out[2*b] = float32(-(v*x0 - g.rho*x1) / det)
		out[2*b+1] = float32(-(-g.rho*x0 + v*x1) / det)
	}
	return nil
}

// Inpainting keeps the known values exactly and moves the others, whatever
// the mask; with nothing known it is the annealed sampler, bit for bit.
func TestInpaintKeepsKnownValues(t *testing.T) {
	m := mixtureScore{means: [][2]float64{{-5, -5}, {5, 5}}, weights: []float64{0.2, 0.8}, std: 1}
	sig := NoiseConfig{SigmaMax: 20, SigmaMin: 0.1, Levels: 10}.Sigmas()
	const n = 7
	for _, tc := range []struct {
		name  string
		known func(j int) bool
	}{
		{"none", func(int) bool { return false }},
		{"all", func(int) bool { return true }},
		{"first coordinate", func(j int) bool { return j%2 == 0 }},
		{"some samples", func(j int) bool { return j/2%3 == 0 }},
	} {
		for _, denoise := range []bool{false, true} {
			cfg := SampleConfig{StepsPerLevel: 5, Eps: 1e-3, Denoise: denoise}
			in := Inpainting{Known: make([]bool, 2*n), Observed: make([]float32, 2*n)}
			for j := range in.Known {
				in.Known[j] = tc.known(j)
				in.Observed[j] = float32(j) - 6.5
			}
			start := make([]float32, 2*n)
			InitUniform(start, -8, 8, 4)
			x := slices.Clone(start)
			s := &Sampler{Model: m, Batch: 3, Dim: 2, Seed: 5}
			if err := s.Inpaint(context.Background(), x, sig, cfg, in); err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(start)
			if err := s.Annealed(context.Background(), want, sig, cfg); err != nil {
				t.Fatal(err)
			}
			for j := range x {
				switch {
				case in.Known[j] && x[j] != in.Observed[j]:
					t.Errorf("%s, denoise %v: known value %d is %v, want the observed %v", tc.name, denoise, j, x[j], in.Observed[j])
				case !in.Known[j] && x[j] == start[j]:
					t.Errorf("%s, denoise %v: unknown value %d kept its start %v", tc.name, denoise, j, x[j])
				case tc.name == "none" && x[j] != want[j]:
					t.Errorf("no known values: value %d is %v, the annealed sampler gives %v", j, x[j], want[j])
				}
			}
		}
	}
}

// For a Gaussian with correlation ρ, the second coordinate given the first
// is Gaussian too. At the last level σ the sampler draws it from the noised
// density given the noised observation ỹ = y + σz: mean ρy/v and variance
// v − ρ²/v + (ρ/v)²σ² with v = 1 + σ². (Without noise, N(ρy, 1−ρ²).)
func TestInpaintGaussianConditional(t *testing.T) {
	const rho, y, n = 0.9, 2.0, 4000
	sig := NoiseConfig{SigmaMax: 20, SigmaMin: 0.1, Levels: 10}.Sigmas()
	in := Inpainting{Known: make([]bool, 2*n), Observed: make([]float32, 2*n)}
	for i := 0; i < n; i++ {
		in.Known[2*i], in.Observed[2*i] = true, y
	}
	x := make([]float32, 2*n)
	InitUniform(x, -8, 8, 1)
	s := &Sampler{Model: gaussScore{rho: rho}, Batch: 500, Dim: 2, Seed: 2}
	if err := s.Inpaint(context.Background(), x, sig, SampleConfig{StepsPerLevel: 100, Eps: 1e-2}, in); err != nil {
		t.Fatal(err)
	}
	var sum, sq float64
	for i := 0; i < n; i++ {
		v := float64(x[2*i+1])
		sum += v
		sq += v * v
	}
	mean := sum / n
	variance := sq/n - mean*mean
	sl := sig[len(sig)-1]
	v := 1 + sl*sl
	wantMean, wantVar := rho*y/v, v-rho*rho/v+rho*rho/(v*v)*sl*sl
	// Standard errors: 0.007 for the mean, 0.005 for the variance.
	if math.Abs(mean-wantMean) > 0.02 || math.Abs(variance-wantVar) > 0.015 {
		t.Fatalf("inpainted coordinate: mean %.4f, variance %.4f; want %.4f and %.4f", mean, variance, wantMean, wantVar)
	}
}

func TestInpaintIndependentOfBatch(t *testing.T) {
	sig := []float64{1, 0.5}
	in := Inpainting{Known: make([]bool, 2*13), Observed: make([]float32, 2*13)}
	for j := range in.Known {
		in.Known[j], in.Observed[j] = j%3 == 0, float32(j)/10
	}
	run := func(batch int) []float32 {
		x := make([]float32, 2*13)
		InitUniform(x, -1, 1, 3)
		s := &Sampler{Model: gaussScore{rho: 0.5}, Batch: batch, Dim: 2, Seed: 9}
		if err := s.Inpaint(context.Background(), x, sig, SampleConfig{StepsPerLevel: 5, Eps: 0.01, Denoise: true}, in); err != nil {
			t.Fatal(err)
		}
		return x
	}
	a, b := run(13), run(4)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("value %d: batch 13 gives %v, batch 4 gives %v", i, a[i], b[i])
		}
	}
}

func TestInpaintRefusesMismatchedSizes(t *testing.T) {
	s := &Sampler{Model: gaussScore{}, Batch: 2, Dim: 2}
	cfg := SampleConfig{StepsPerLevel: 1, Eps: 0.1}
	for _, in := range []Inpainting{
		{Known: make([]bool, 3), Observed: make([]float32, 4)},
		{Known: make([]bool, 4), Observed: make([]float32, 2)},
	} {
		err := s.Inpaint(context.Background(), make([]float32, 4), []float64{1}, cfg, in)
		if err == nil || !contains(err.Error(), "mask") {
			t.Errorf("%d mask and %d observed values for 4: err %v", len(in.Known), len(in.Observed), err)
		}
	}
}
