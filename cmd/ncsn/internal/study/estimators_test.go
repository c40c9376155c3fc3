package study

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/model"
)

// A tiny study through every code path: each estimator trained by the real
// trainer, evaluated, the samplers compared, the table written.
func TestEstimatorsTiny(t *testing.T) {
	out := t.TempDir()
	cfg := EstimatorsConfig{Steps: 3, Out: out, HeldOut: 40, Samples: 60, Sets: []string{"sample.steps_per_level=2", "train.global_batch=32", "data.std=0.5"}}
	r, err := Estimators(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Estimators) != len(Losses) || len(r.Sigmas) != 10 || r.Config.Run.Steps != 3 || r.Config.Train.GlobalBatch != 32 {
		t.Fatalf("report: %d estimators, %d levels, config %+v", len(r.Estimators), len(r.Sigmas), r.Config.Run)
	}
	sum := func(v []float64) float64 {
		var s float64
		for _, x := range v {
			s += x
		}
		return s
	}
	for i, e := range r.Estimators {
		if e.Loss != Losses[i] || len(e.ScoreError) != 10 || !(e.SecPerStep > 0) || len(e.Modes) != 2 || math.Abs(sum(e.Modes)-1) > 1e-9 {
			t.Errorf("row %+v", e)
		}
		for _, v := range e.ScoreError {
			if !(v >= 0) || math.IsInf(v, 0) {
				t.Errorf("%s: score error %v", e.Loss, v)
			}
		}
		if _, err := os.Stat(filepath.Join(out, e.Loss, "checkpoints", "ckpt-3.safetensors")); err != nil {
			t.Errorf("%s: no checkpoint of its run: %v", e.Loss, err)
		}
	}
	if len(r.Samplers) != 4 || r.Samplers[0].Modes[1] != r.Estimators[0].Modes[1] {
		t.Fatalf("samplers %+v", r.Samplers)
	}
	for _, s := range r.Samplers {
		if math.Abs(sum(s.Modes)-1) > 1e-9 {
			t.Errorf("sampler %+v", s)
		}
	}
	md, err := os.ReadFile(filepath.Join(out, "estimators.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range append([]string{"0.2·N((-5,-5), 0.25·I) + 0.8·N((5,5), 0.25·I)", "| σ=20 |", "| truth |", "plain Langevin at σ = 0.1 (20 steps, α = 0.05) | exact score |"}, Losses...) {
		if !strings.Contains(string(md), want) {
			t.Errorf("estimators.md lacks %q:\n%s", want, md)
		}
	}
	// A second study into the same folder would mix runs: refused.
	if _, err := Estimators(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Errorf("second study into %s: %v", out, err)
	}
}

func TestEstimatorsRefusals(t *testing.T) {
	for _, c := range []struct {
		sets []string
		want string
	}{
		{[]string{"data.name=moons"}, "needs gmm"},
		{[]string{"train.lr=-1"}, "train.lr"},
	} {
		_, err := Estimators(context.Background(), EstimatorsConfig{Steps: 1, Sets: c.sets})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %q", c.sets, err, c.want)
		}
	}
}

// exactScore is the mixture's score, which the sampler comparison relies on.
func TestExactScore(t *testing.T) {
	r, err := runConfig(EstimatorsConfig{}, model.LossDSM)
	if err != nil {
		t.Fatal(err)
	}
	g, err := r.Data.GMM()
	if err != nil {
		t.Fatal(err)
	}
	e := &exactScore{g: g}
	x, sigma, out := []float32{5, 5, 1, -2}, []float32{0.1, 3}, make([]float32, 4)
	if err := e.Score(x, sigma, out); err != nil {
		t.Fatal(err)
	}
	want := make([]float64, 2)
	for b := range sigma {
		g.Score([]float64{float64(x[2*b]), float64(x[2*b+1])}, float64(sigma[b]), want)
		for j := range want {
			if math.Abs(float64(out[2*b+j])-want[j]) > 1e-6 {
				t.Errorf("sample %d: %v, want %v", b, out[2*b:2*b+2], want)
			}
		}
	}
	if err := e.Score(x, sigma[:1], out); err == nil {
		t.Error("mismatched sizes accepted")
	}
}
