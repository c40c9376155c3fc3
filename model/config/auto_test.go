package config

import (
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
)

// A small built-in image set: technique 1 measures all of its examples.
const autoRun = `
run:   {seed: 3}
data:  {name: synthetic, image_size: 8, train_size: 300}
noise: {sigma_max: auto, sigma_min: 0.01, levels: auto}
sample: {steps_per_level: 5, eps: auto}
`

// bruteMax is the largest pairwise distance over all of ds, in float64.
func bruteMax(ds data.Dataset) float64 {
	n, d := ds.Len(), data.Size(ds)
	x := make([]float32, n*d)
	for i := 0; i < n; i++ {
		ds.Example(i, x[i*d:(i+1)*d])
	}
	var best float64
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			var s float64
			for k := 0; k < d; k++ {
				v := float64(x[i*d+k]) - float64(x[j*d+k])
				s += v * v
			}
			best = max(best, s)
		}
	}
	return math.Sqrt(best)
}

// Load keeps auto; Resolve replaces it by techniques 1–3's numbers, checked
// here against a brute-force distance and the model's rules.
func TestResolveAuto(t *testing.T) {
	c, err := Load(write(t, autoRun), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Auto{SigmaMax: true, Levels: true, Eps: true}); c.Auto != want {
		t.Fatalf("Auto = %+v, want %+v", c.Auto, want)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "noise.sigma_max: auto has not been resolved") {
		t.Fatalf("Validate of an unresolved config: %v", err)
	}
	r, p, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	train, _, err := data.Open(c.Data, c.Run.Seed)
	if err != nil {
		t.Fatal(err)
	}
	dmax := bruteMax(train)
	if math.Abs(p.Distance.Max-dmax) > 1e-9 || p.Distance.Sample != 300 || p.Distance.Of != 300 || p.Distance.Seed != 3 {
		t.Errorf("distance %+v, want max %v over all 300", p.Distance, dmax)
	}
	if math.Abs(r.Noise.SigmaMax/dmax-1) > 5e-4 {
		t.Errorf("sigma_max %v, want ≈ %v", r.Noise.SigmaMax, dmax)
	}
	g, err := model.RuleGamma(64)
	if err != nil {
		t.Fatal(err)
	}
	if want := model.LevelsFor(r.Noise.SigmaMax, 0.01, g); r.Noise.Levels != want || p.RuleGamma != g {
		t.Errorf("levels %d (rule γ %v), want %d (γ %v)", r.Noise.Levels, p.RuleGamma, want, g)
	}
	eps, _, err := model.TunedEps(0.01, r.Noise.Ratio(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.Sample.Eps/eps-1) > 5e-3 {
		t.Errorf("eps %v, want ≈ %v", r.Sample.Eps, eps)
	}
	if p.Gamma != r.Noise.Ratio() || p.SamplerSteps != r.Noise.Levels*5+1 || len(p.Sigmas) != r.Noise.Levels || !(p.StepRatio > 1) {
		t.Errorf("plan %+v", p)
	}
	if r.Auto != (Auto{}) || r.Validate() != nil {
		t.Fatalf("resolved config still has auto %+v or is invalid: %v", r.Auto, r.Validate())
	}
	// Resolution is deterministic, and a resolved config is stored and read back as numbers.
	again, _, err := c.Resolve()
	if err != nil || string(again.JSON()) != string(r.JSON()) {
		t.Fatalf("second resolution differs: %v\n%s\n%s", err, again.JSON(), r.JSON())
	}
	back, err := FromJSON(r.JSON())
	if err != nil || string(back.JSON()) != string(r.JSON()) || back.Auto != (Auto{}) {
		t.Fatalf("stored config: %v, auto %+v", err, back.Auto)
	}
	// Centred data spans twice the range: σ_1 doubles.
	cc, err := Load(write(t, autoRun), []string{"data.centered=true"})
	if err != nil {
		t.Fatal(err)
	}
	if _, pc, err := cc.Resolve(); err != nil || math.Abs(pc.Distance.Max-2*dmax) > 1e-9 {
		t.Errorf("centred: %+v, %v; want max %v", pc.Distance, err, 2*dmax)
	}
	// A config without auto resolves to itself.
	n, err := Load(write(t, toy), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rn, pn, err := n.Resolve(); err != nil || string(rn.JSON()) != string(n.JSON()) || pn.Distance != nil {
		t.Fatalf("config without auto: %v, %+v", err, pn)
	}
}

// YAML writes auto as auto, and it loads back the same.
func TestAutoYAMLRoundTrip(t *testing.T) {
	c, err := Load(write(t, autoRun), []string{"sample.eps=2e-5"})
	if err != nil {
		t.Fatal(err)
	}
	y := string(c.YAML())
	if !strings.Contains(y, "sigma_max: auto") || !strings.Contains(y, "levels: auto") || strings.Contains(y, "eps: auto") {
		t.Fatalf("YAML:\n%s", y)
	}
	d, err := Load(write(t, y), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d, c) {
		t.Fatalf("YAML round trip: %+v, want %+v", d, c)
	}
}

func TestImageDefaultsFollowNCSNv2(t *testing.T) {
	for _, name := range []string{"mnist", "fashion-mnist", "cifar10"} {
		c, err := Load("", []string{"data.name=" + name, "data.path=/x"})
		if name == "fashion-mnist" {
			c, err = Load("", []string{"data.name=" + name})
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.Auto != (Auto{SigmaMax: true, Levels: true, Eps: true}) || c.Noise.SigmaMin != 0.01 || c.Sample.StepsPerLevel != 5 ||
			c.Run.SampleEvery != 500 || c.Data.Flip != (name == "cifar10") || c.Data.Centered {
			t.Errorf("%s defaults: auto %+v, noise %+v, sample %+v, sample_every %d, data %+v", name, c.Auto, c.Noise, c.Sample, c.Run.SampleEvery, c.Data)
		}
	}
	// A number overrides the default auto of its key only.
	c, err := Load("", []string{"data.name=fashion-mnist", "noise.sigma_max=30"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Auto != (Auto{Levels: true, Eps: true}) || c.Noise.SigmaMax != 30 {
		t.Fatalf("sigma_max=30: auto %+v, noise %+v", c.Auto, c.Noise)
	}
	// And auto overrides a toy's number.
	if c, err = Load(write(t, toy), []string{"noise.levels=auto"}); err != nil || c.Auto != (Auto{Levels: true}) {
		t.Fatalf("levels=auto on the toy: %+v, %v", c.Auto, err)
	}
}

// The toy of DESIGN.md's figures: cheap to resolve, and its 2-D data has no γ.
func TestAutoRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		sets    []string
		resolve bool // the error comes from Resolve, not Load
		want    string
	}{
		{"not a number", toy, []string{"noise.sigma_max=big"}, false, `noise.sigma_max: "big", want a number or auto`},
		{"levels fraction", toy, []string{"noise.levels=2.5"}, false, `noise.levels: "2.5", want a number or auto`},
		{"eps negative", toy, []string{"sample.eps=-1"}, false, "sample.eps: -1"},
		{"sigma_min with auto", autoRun, []string{"noise.sigma_min=-1"}, false, "noise.sigma_min: -1"},
		{"whole number", toy, []string{"run.steps=2.5"}, false, "run.steps: 2.5, want a whole number"},
		{"sample_every", toy, []string{"run.sample_every=-1"}, false, "run.sample_every: -1"},
		{"snapshot_samples", toy, []string{"run.snapshot_samples=0"}, false, "run.snapshot_samples: 0"},
		{"auto elsewhere", toy, []string{"train.lr=auto"}, false, "train.lr"},
		{"levels for 2-D data", toy, []string{"noise.levels=auto"}, true, "noise.levels: auto: model: technique 2 needs data of at least 5 values"},
		{"sigma_max below sigma_min", autoRun, []string{"noise.sigma_min=50"}, true, "noise.sigma_max: auto gave"},
		{"data missing", autoRun, []string{"data.name=mnist", "data.path=/nonexistent", "data.image_size=0", "data.train_size=0"}, true, "noise.sigma_max: auto measures the training data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(write(t, tc.file), tc.sets)
			if tc.resolve {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				_, _, err = c.Resolve()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

// A stored config is resolved; keys it lacks take their defaults, never auto.
func TestFromJSONIsResolved(t *testing.T) {
	if _, err := os.Stat(data.DefaultFashionMNISTPath); err != nil {
		t.Skipf("%v (apt-get install dataset-fashion-mnist)", err)
	}
	c, err := Load("", []string{"data.name=fashion-mnist"})
	if err != nil {
		t.Fatal(err)
	}
	r, p, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	// The notes' numbers for 28×28 data: σ_1 ≈ 20, γ ≈ 1.08, L ≈ 100, ε ≈ 1e-5 at T = 5.
	if r.Noise.SigmaMax < 15 || r.Noise.SigmaMax > 30 || r.Noise.Levels < 90 || r.Noise.Levels > 110 ||
		math.Abs(p.RuleGamma-1.08) > 0.005 || r.Sample.Eps < 0.8e-5 || r.Sample.Eps > 1.3e-5 || p.Distance.Sample != DistanceSample {
		t.Errorf("fashion-mnist resolves to noise %+v, eps %v, plan γ %v, distance %+v", r.Noise, r.Sample.Eps, p.RuleGamma, p.Distance)
	}
	back, err := FromJSON(r.JSON())
	if err != nil || back.Auto != (Auto{}) || back.Noise != r.Noise || back.Sample != r.Sample {
		t.Fatalf("FromJSON: %v, %+v", err, back)
	}
}
