package worker

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// trainToy trains the paper's toy mixture 0.2·N((−5,−5), I) + 0.8·N((5,5), I)
// in one process and returns the run's network and state.
func trainToy(t *testing.T, steps int64, sets ...string) *Local {
	t.Helper()
	sets = append([]string{"data.name=gmm", "run.steps=" + strconv.FormatInt(steps, 10), "run.checkpoint_every=100000"}, sets...)
	rc, err := config.Load("", sets)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(LocalConfig{Run: rc, Out: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestToyMixture(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model: not in -short")
	}
	t0 := time.Now()
	l := trainToy(t, 5000)
	t.Logf("trained 5000 steps in %v", time.Since(t0))
	rc := l.cfg.Run
	g, err := rc.Data.WithDefaults().GMM()
	if err != nil {
		t.Fatal(err)
	}
	sigmas := rc.Noise.Sigmas()

	// Use the EMA weights, as sampling does by default.
	net, err := model.New(rc.Model, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	copy(net.Params().Data, l.State().EMA)
	const n, batch = 5000, 1000
	sc, err := net.NewScorer(batch)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	// The learned score against the analytic score of the noised mixture.
	_, test, err := data.Open(rc.Data, rc.Run.Seed)
	if err != nil {
		t.Fatal(err)
	}
	x0 := make([]float32, 2*n)
	for i := 0; i < n; i++ {
		test.Example(i, x0[2*i:2*i+2])
	}
	errs, err := model.ScoreErrors(sc, batch, 2, x0, sigmas, g.Score, 7)
	if err != nil {
		t.Fatal(err)
	}
	// At small σ the DSM target's variance (1/σ²) swamps what a short run can
	// average, and λ(σ) = σ² weights those levels little: the bound is on the
	// σ²-weighted error, against the largest error of a zero model.
	var worst float64
	for _, e := range errs {
		worst = max(worst, e.Baseline)
	}
	for _, e := range errs {
		t.Logf("σ=%7.3f  σ²-weighted score error %.4f  (zero model %.4f, relative %.4f)", e.Sigma, e.Error, e.Baseline, e.Relative())
		if e.Error > 0.1*worst {
			t.Errorf("σ=%g: σ²-weighted score error %.3f, want ≤ %.3f", e.Sigma, e.Error, 0.1*worst)
		}
	}

	frac := func(x []float32) float64 {
		in := 0
		for i := 0; i < n; i++ {
			if g.Nearest([]float64{float64(x[2*i]), float64(x[2*i+1])}) == 1 {
				in++
			}
		}
		return float64(in) / n
	}
	t1 := time.Now()
	s := &model.Sampler{Model: sc, Batch: batch, Dim: 2, Seed: 3}
	x := make([]float32, 2*n)
	model.InitUniform(x, -8, 8, 3)
	if err := s.Annealed(context.Background(), x, sigmas, rc.Sample); err != nil {
		t.Fatal(err)
	}
	fa := frac(x)
	t.Logf("annealed sampling of %d points took %v", n, time.Since(t1))
	model.InitUniform(x, -8, 8, 3)
	start := frac(x)
	if err := s.Langevin(context.Background(), x, sigmas[len(sigmas)-1], 300, 0.05); err != nil {
		t.Fatal(err)
	}
	fp := frac(x)
	t.Logf("(5,5) mode weight: annealed %.4f, plain Langevin %.4f (start %.4f), truth 0.8", fa, fp, start)
	if math.Abs(fa-0.8) > 0.03 {
		t.Errorf("annealed Langevin puts %.4f of samples in the (5,5) mode, want 0.8 ± 0.03", fa)
	}
	if math.Abs(fp-0.8) < 0.1 {
		t.Errorf("plain Langevin puts %.4f in the (5,5) mode: it should keep the start's split, not find 0.8", fp)
	}
}
