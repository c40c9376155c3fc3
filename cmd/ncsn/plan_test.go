package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/model/samples"
)

// ncsn plan prints what a run would resolve auto to, and the figures behind it.
func TestPlan(t *testing.T) {
	sets := []string{"data.image_size=8", "data.train_size=500"}
	args := []string{"plan"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, errs, code := ncsn(t, args...)
	if code != 0 {
		t.Fatalf("plan exited %d: %s", code, errs)
	}
	for _, want := range []string{"D = 64", "auto, technique 1", "over 500 of the 500 training examples, chosen by run.seed 1",
		"auto, technique 2", "solves Φ(√(2D)(γ−1)+3γ) − Φ(√(2D)(γ−1)−3γ) = 0.5 for D = 64", "auto, technique 3", "s_T²/σ_i² = ", "sigmas: "} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	out, errs, code = ncsn(t, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("plan --json exited %d: %s", code, errs)
	}
	var p struct {
		Noise struct {
			SigmaMax float64 `json:"sigma_max"`
			Levels   int     `json:"levels"`
		}
		Sample struct {
			Eps float64 `json:"eps"`
		}
		Auto         []string
		Sigmas       []float64
		SamplerSteps int `json:"sampler_steps"`
		Distance     *config.Distance
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan --json %q: %v", out, err)
	}
	// The same numbers as a run resolves to.
	rc, err := config.Load("", sets)
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := rc.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if p.Noise.SigmaMax != r.Noise.SigmaMax || p.Noise.Levels != r.Noise.Levels || p.Sample.Eps != r.Sample.Eps ||
		len(p.Sigmas) != r.Noise.Levels || p.SamplerSteps != 5*r.Noise.Levels+1 || len(p.Auto) != 3 || p.Distance == nil || p.Distance.Sample != 500 {
		t.Fatalf("plan --json %+v, a run resolves to noise %+v, eps %v", p, r.Noise, r.Sample.Eps)
	}
}

// On Fashion-MNIST the plan gives the notes' numbers for D = 784.
func TestPlanFashionMNIST(t *testing.T) {
	if _, err := os.Stat(data.DefaultFashionMNISTPath); err != nil {
		t.Skipf("%v (apt-get install dataset-fashion-mnist)", err)
	}
	out, errs, code := ncsn(t, "plan", "--set", "data.name=fashion-mnist")
	if code != 0 {
		t.Fatalf("plan exited %d: %s", code, errs)
	}
	if !strings.Contains(out, "over 5000 of the 60000 training examples") || !strings.Contains(out, "γ = 1.082 solves") {
		t.Fatalf("plan:\n%s", out)
	}
}

func TestPlanRejects(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"plan", "--set", "noise.sigma_max=big"}, 2, `noise.sigma_max: "big", want a number or auto`},
		{[]string{"plan", "--set", "data.name=gmm", "--set", "noise.levels=auto"}, 1, "noise.levels: auto"},
		{[]string{"plan", "--set", "data.name=mnist", "--set", "data.path=/nonexistent-mnist"}, 1, "/nonexistent-mnist"},
		{[]string{"plan", "extra"}, 2, "unexpected arguments"},
	} {
		_, errs, code := ncsn(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("ncsn %v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
}

// A short ncsn train with auto keys and snapshots: the checkpoints store the
// resolved numbers, and DIR/snapshots holds a grid per snapshot and the CSV.
func TestTrainSnapshots(t *testing.T) {
	dir := t.TempDir()
	sets := []string{"data.image_size=8", "data.train_size=200", "model.channels=[8,8,8]", "train.global_batch=8",
		"run.steps=6", "run.checkpoint_every=3", "run.sample_every=2", "run.snapshot_samples=4", "run.samples=4"}
	args := []string{"train", "--out", dir}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	if _, errs, code := ncsn(t, args...); code != 0 {
		t.Fatalf("train exited %d: %s", code, errs)
	}
	rc, _, _, err := samples.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := config.Load("", sets)
	if err != nil {
		t.Fatal(err)
	}
	if want, _, err = want.Resolve(); err != nil {
		t.Fatal(err)
	}
	if rc.Noise != want.Noise || rc.Sample != want.Sample {
		t.Fatalf("checkpoint holds noise %+v sample %+v, want the resolved %+v %+v", rc.Noise, rc.Sample, want.Noise, want.Sample)
	}
	b, err := os.ReadFile(filepath.Join(dir, "snapshots", "snapshots.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if lines[0] != "step,seconds,skipped" {
		t.Fatalf("snapshots.csv header %q", lines[0])
	}
	// Steps 2 and 4 are offered (6 is the last: the run's samples show it);
	// 2 still drawing makes 4 skip. Train waits for the snapshot in progress.
	offers := 0
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		step, _ := strconv.Atoi(f[0])
		skipped, _ := strconv.Atoi(f[2])
		if len(f) != 3 || step%2 != 0 || step < 2 || step > 4 {
			t.Fatalf("snapshots.csv row %q", l)
		}
		offers += 1 + skipped
		if _, err := os.Stat(filepath.Join(dir, "snapshots", "step-00000"+f[0]+".png")); err != nil {
			t.Fatal(err)
		}
	}
	if len(lines) < 2 || offers != 2 {
		t.Fatalf("snapshots.csv accounts for %d of 2 offers:\n%s", offers, b)
	}
}
