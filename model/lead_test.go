package model

import (
	"context"
	"math"
	"testing"
)

func TestSigmas(t *testing.T) {
	s := NoiseConfig{SigmaMax: 1, SigmaMin: 0.01, Levels: 10}.Sigmas()
	// NCSN's published schedule.
	want := []float64{1, .5995, .3594, .2154, .1292, .0774, .0464, .0278, .0167, .01}
	for i := range want {
		if math.Abs(s[i]-want[i]) > 5e-5 {
			t.Fatalf("σ_%d = %v, want %v", i+1, s[i], want[i])
		}
		if i > 0 {
			if r := s[i] / s[i-1]; math.Abs(r-s[1]/s[0]) > 1e-12 {
				t.Fatalf("ratio %d = %v, not geometric", i, r)
			}
		}
	}
}

func TestNoiseValidate(t *testing.T) {
	for _, tc := range []struct {
		c    NoiseConfig
		want string
	}{
		{NoiseConfig{1, 0.01, 10}, ""},
		{NoiseConfig{0.01, 1, 10}, "noise.sigma_min"},
		{NoiseConfig{1, 1, 10}, "noise.sigma_min"},
		{NoiseConfig{-1, 0.01, 10}, "noise.sigma_max"},
		{NoiseConfig{1, 0, 10}, "noise.sigma_min"},
		{NoiseConfig{1, 0.1, 1}, "noise.levels"},
	} {
		err := tc.c.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !contains(err.Error(), tc.want)) {
			t.Errorf("%+v: err %v, want mention of %q", tc.c, err, tc.want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestAdamFirstStepIsSignTimesLR(t *testing.T) {
	// With bias correction, Adam's first step is lr·g/(|g|+ε') ≈ lr·sign(g).
	a, err := NewAdam(AdamConfig{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Eps: 1e-12}, 3)
	if err != nil {
		t.Fatal(err)
	}
	p := []float32{1, 1, 1}
	if _, err := a.Update(p, []float32{3, -0.5, 0}); err != nil {
		t.Fatal(err)
	}
	want := []float32{0.99, 1.01, 1}
	for i := range p {
		if math.Abs(float64(p[i]-want[i])) > 1e-6 {
			t.Fatalf("p = %v, want %v", p, want)
		}
	}
}

func TestAdamMinimisesQuadratic(t *testing.T) {
	a, _ := NewAdam(AdamConfig{LR: 0.05, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, 2)
	p := []float32{3, -2}
	g := make([]float32, 2)
	for i := 0; i < 2000; i++ {
		g[0], g[1] = 2*(p[0]-1), 20*(p[1]+1)
		if _, err := a.Update(p, g); err != nil {
			t.Fatal(err)
		}
	}
	if math.Abs(float64(p[0]-1)) > 1e-2 || math.Abs(float64(p[1]+1)) > 1e-2 {
		t.Fatalf("p = %v, want (1, -1)", p)
	}
}

func TestAdamClip(t *testing.T) {
	a, _ := NewAdam(AdamConfig{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, ClipNorm: 1}, 2)
	p := []float32{0, 0}
	norm, err := a.Update(p, []float32{3, 4})
	if err != nil || norm != 5 {
		t.Fatalf("norm %v err %v", norm, err)
	}
	// m = (1-β1)·g·(1/5).
	if math.Abs(float64(a.M[0])-0.1*0.6) > 1e-7 || math.Abs(float64(a.M[1])-0.1*0.8) > 1e-7 {
		t.Fatalf("m = %v: gradient was not clipped to norm 1", a.M)
	}
	if _, err := a.Update(p, []float32{float32(math.NaN()), 0}); err == nil {
		t.Fatal("NaN gradient accepted")
	}
}

func TestEMA(t *testing.T) {
	e := []float32{0}
	for i := 0; i < 10; i++ {
		EMA(e, []float32{1}, 0.9)
	}
	if want := 1 - math.Pow(0.9, 10); math.Abs(float64(e[0])-want) > 1e-6 {
		t.Fatalf("ema = %v, want %v", e[0], want)
	}
}

func TestNoiseKeyedByPosition(t *testing.T) {
	d := &Noise{Seed: 5, Sigmas: NoiseConfig{SigmaMax: 1, SigmaMin: 0.01, Levels: 10}.Sigmas()}
	const dim = 3
	full := struct {
		lv []int
		s  []float32
		z  []float32
	}{make([]int, 8), make([]float32, 8), make([]float32, 8*dim)}
	d.Draw(7, 0, full.lv, full.s, full.z)
	// Positions 3..7 drawn on their own must equal the tail of the full draw.
	lv, s, z := make([]int, 5), make([]float32, 5), make([]float32, 5*dim)
	d.Draw(7, 3, lv, s, z)
	for b := 0; b < 5; b++ {
		if lv[b] != full.lv[3+b] || s[b] != full.s[3+b] {
			t.Fatalf("sample %d: level %d σ %v, want %d %v", b, lv[b], s[b], full.lv[3+b], full.s[3+b])
		}
		for j := 0; j < dim; j++ {
			if z[b*dim+j] != full.z[(3+b)*dim+j] {
				t.Fatalf("sample %d: z differs", b)
			}
		}
	}
	// Another step draws other noise.
	d.Draw(8, 3, lv, s, z)
	if z[0] == full.z[3*dim] {
		t.Fatal("step 8 repeats step 7's noise")
	}
}

func TestLossStatsRoundTrip(t *testing.T) {
	s := NewLossStats(3)
	s.Add([]int{0, 2, 2}, []float32{1, 2, 4})
	buf := make([]float32, 6)
	s.Put(buf)
	r := NewLossStats(3)
	if err := r.Get(buf); err != nil {
		t.Fatal(err)
	}
	if got := r.PerLevel(); got[0] != 1 || got[1] != 0 || got[2] != 3 {
		t.Fatalf("per level %v", got)
	}
	if r.Mean() != 7.0/3 {
		t.Fatalf("mean %v", r.Mean())
	}
}

// mixtureScore is the exact score of a noised 2-D Gaussian mixture: the
// sampler tests use it so that they test the sampler, not a trained network.
type mixtureScore struct {
	means   [][2]float64
	weights []float64
	std     float64
}

func (m mixtureScore) Score(x, sigma, out []float32) error {
	for b := range sigma {
		v := m.std*m.std + float64(sigma[b])*float64(sigma[b])
		px, py := float64(x[2*b]), float64(x[2*b+1])
		var lmax float64 = math.Inf(-1)
		logs := make([]float64, len(m.means))
		for k, mu := range m.means {
			dx, dy := px-mu[0], py-mu[1]
			logs[k] = math.Log(m.weights[k]) - (dx*dx+dy*dy)/(2*v)
			lmax = math.Max(lmax, logs[k])
		}
		var z, gx, gy float64
		for k, mu := range m.means {
			w := math.Exp(logs[k] - lmax)
			z += w
			gx += w * (mu[0] - px) / v
			gy += w * (mu[1] - py) / v
		}
		out[2*b], out[2*b+1] = float32(gx/z), float32(gy/z)
	}
	return nil
}

func modeFraction(x []float32) float64 {
	n := 0
	for i := 0; i < len(x); i += 2 {
		if x[i]+x[i+1] > 0 {
			n++
		}
	}
	return float64(n) / float64(len(x)/2)
}

func TestSamplersOnExactMixtureScore(t *testing.T) {
	m := mixtureScore{means: [][2]float64{{-5, -5}, {5, 5}}, weights: []float64{0.2, 0.8}, std: 1}
	sig := NoiseConfig{SigmaMax: 20, SigmaMin: 0.1, Levels: 10}.Sigmas()
	const n = 4000
	x := make([]float32, 2*n)
	InitUniform(x, -8, 8, 1)
	s := &Sampler{Model: m, Batch: 500, Dim: 2, Seed: 1}
	if err := s.Annealed(context.Background(), x, sig, SampleConfig{StepsPerLevel: 100, Eps: 1e-3, Denoise: true}); err != nil {
		t.Fatal(err)
	}
	if f := modeFraction(x); math.Abs(f-0.8) > 0.03 {
		t.Fatalf("annealed: %.3f of samples in the (5,5) mode, want 0.8 ± 0.03", f)
	}
	InitUniform(x, -8, 8, 1)
	if err := s.Langevin(context.Background(), x, 0.1, 1000, 0.05); err != nil {
		t.Fatal(err)
	}
	if f := modeFraction(x); math.Abs(f-0.5) > 0.05 {
		t.Fatalf("plain Langevin: %.3f of samples in the (5,5) mode, want the start's ≈ 0.5", f)
	}
}

func TestSamplerIndependentOfBatch(t *testing.T) {
	m := mixtureScore{means: [][2]float64{{0, 0}}, weights: []float64{1}, std: 1}
	sig := []float64{1, 0.5}
	run := func(batch int) []float32 {
		x := make([]float32, 2*13)
		InitUniform(x, -1, 1, 3)
		s := &Sampler{Model: m, Batch: batch, Dim: 2, Seed: 9}
		if err := s.Annealed(context.Background(), x, sig, SampleConfig{StepsPerLevel: 5, Eps: 0.01}); err != nil {
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

func TestSamplerHonoursCancel(t *testing.T) {
	m := mixtureScore{means: [][2]float64{{0, 0}}, weights: []float64{1}, std: 1}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sampler{Model: m, Batch: 2, Dim: 2, Progress: func(done, total int) {
		if done == 3 {
			cancel()
		}
	}}
	err := s.Langevin(ctx, make([]float32, 4), 1, 100, 0.1)
	if err == nil || !contains(err.Error(), "canceled") {
		t.Fatalf("err = %v, want cancellation", err)
	}
}
