package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/keyrand"
	"github.com/ncsn/ncsn/internal/npy"
	"github.com/ncsn/ncsn/internal/plot"
)

// quality is the JSON of samples.Quality.
type quality struct {
	N         int
	Reference int
	Images    *struct {
		FID, KID   float64
		FloorFID   float64 `json:"floor_fid"`
		FloorKID   float64 `json:"floor_kid"`
		Accuracy   float64 `json:"classifier_accuracy"`
		NNDistance float64 `json:"nn_distance"`
		NNReal     float64 `json:"nn_distance_real"`
		NNImage    string  `json:"nn_image"`
	}
	Points *struct {
		Energy      float64 `json:"energy_distance"`
		FloorEnergy float64 `json:"floor_energy_distance"`
	}
}

// Images: the feature network trains once and is then found in the cache;
// real test images (as .npy and as a PNG grid) score near their floor, uniform
// noise far above it; checkpoints are scored one by one and all at once.
func TestEvalImages(t *testing.T) {
	dir := t.TempDir()
	// A feature network trained for seconds (near chance on 28×28 shapes): this
	// tests the command's wiring; model/samples tests a trained one.
	cache := []string{"--feature-cache", filepath.Join(dir, "cache"), "--feature-examples", "2000", "--feature-epochs", "2"}
	eval := func(args ...string) string {
		t.Helper()
		out, errs, code := ncsn(t, append(append([]string{"eval"}, args...), cache...)...)
		if code != 0 {
			t.Fatalf("eval %v exited %d: %s", args, code, errs)
		}
		return out
	}
	out := eval("--train-features", "--data", "synthetic")
	if !strings.Contains(out, "trained in") || !strings.Contains(out, "test accuracy") {
		t.Fatalf("first --train-features: %q", out)
	}
	if out := eval("--train-features", "--data", "synthetic"); !strings.Contains(out, "found in the cache") {
		t.Fatalf("second --train-features: %q", out)
	}

	_, test, err := data.Open(data.Config{Name: data.NameSynthetic}, 1)
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	real := make([]float32, n*784)
	for i := 0; i < n; i++ {
		test.Example(i, real[i*784:(i+1)*784])
	}
	noise := make([]float32, len(real))
	r := keyrand.New(1)
	for i := range noise {
		noise[i] = float32(r.Float64())
	}
	realNpy, noiseNpy, grid := filepath.Join(dir, "real.npy"), filepath.Join(dir, "noise.npy"), filepath.Join(dir, "real.png")
	npy.WriteFile(realNpy, []int{n, 1, 28, 28}, real)
	npy.WriteFile(noiseNpy, []int{n, 1, 28, 28}, noise)
	img, _ := plot.Grid(real, n, 1, 28, 28, 20, 2)
	plot.WritePNG(grid, img)
	score := func(path string) quality {
		t.Helper()
		var q quality
		if err := json.Unmarshal([]byte(eval("--samples", path, "--data", "synthetic", "--json")), &q); err != nil || q.Images == nil {
			t.Fatalf("%s: %v", path, err)
		}
		return q
	}
	rq, zq, gq := score(realNpy), score(noiseNpy), score(grid)
	re, ze := rq.Images, zq.Images
	t.Logf("real: FID %.4f KID %.5f (floor %.4f, %.5f); noise: FID %.2f KID %.4f; classifier %.1f%%", re.FID, re.KID, re.FloorFID, re.FloorKID, ze.FID, ze.KID, 100*re.Accuracy)
	if rq.N != n || rq.Reference != 10000 || re.FID > 2*re.FloorFID+0.5 || ze.FID < 20*re.FloorFID+5 || ze.KID < 10*re.FloorKID+0.05 {
		t.Errorf("real images FID %.4f, noise %.4f, floor %.4f", re.FID, ze.FID, re.FloorFID)
	}
	// The grid holds the same 8-bit images.
	if math.Abs(gq.Images.FID-re.FID) > 1e-6*max(1, re.FID) || gq.N != n {
		t.Errorf("grid: FID %v of %d, npy %v of %d", gq.Images.FID, gq.N, re.FID, rq.N)
	}
	if _, err := os.Stat(filepath.Join(dir, "real-nn.png")); err != nil || re.NNImage != filepath.Join(dir, "real-nn.png") {
		t.Errorf("nearest-neighbour image %q: %v", re.NNImage, err)
	}
	text := eval("--samples", noiseNpy, "--data", "synthetic", "--neighbours", "0")
	for _, want := range []string{"FID", "KID", "floor (400 real)", "compare only with other ncsn", "nearest training image"} {
		if !strings.Contains(text, want) {
			t.Errorf("text report lacks %q:\n%s", want, text)
		}
	}

	// A tiny image run on the same data (so the cached network serves it):
	// each checkpoint scored, then the sweep.
	run := filepath.Join(dir, "run")
	if _, errs, code := ncsn(t, "train", "--out", run, "--set", "model.channels=[8,8,8]",
		"--set", "run.steps=4", "--set", "run.checkpoint_every=2", "--set", "train.global_batch=8", "--set", "run.samples=0"); code != 0 {
		t.Fatalf("train exited %d: %s", code, errs)
	}
	out = eval("--checkpoint", run, "--n", "12", "--held-out", "20", "--steps-per-level", "1")
	for _, want := range []string{"step 4", "held-out loss", "12 annealed Langevin samples", "FID", "nn-4.png"} {
		if !strings.Contains(out, want) {
			t.Errorf("checkpoint report lacks %q:\n%s", want, out)
		}
	}
	out = eval("--checkpoint", run, "--all", "--n", "12", "--held-out", "20", "--steps-per-level", "1", "--out", filepath.Join(dir, "sweep"))
	if !strings.Contains(out, "step 2: FID") || !strings.Contains(out, "step 4: FID") {
		t.Errorf("sweep output:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "sweep", "eval.csv"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if err != nil || len(lines) != 3 || !strings.HasPrefix(lines[0], "step,fid,kid,") || !strings.HasPrefix(lines[1], "2,") || !strings.HasPrefix(lines[2], "4,") {
		t.Errorf("eval.csv: %v\n%s", err, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "sweep", "eval.png")); err != nil {
		t.Error(err)
	}
}

// 2-D toys: energy distance with its floor, per checkpoint and as a sweep.
func TestEvalToys(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := ncsn(t, "train", "--out", dir, "--set", "data.name=moons", "--set", "run.steps=30",
		"--set", "run.checkpoint_every=10", "--set", "run.samples=0"); code != 0 {
		t.Fatalf("train exited %d: %s", code, errs)
	}
	out, errs, code := ncsn(t, "eval", "--checkpoint", dir, "--n", "300", "--held-out", "100", "--steps-per-level", "3", "--json")
	if code != 0 {
		t.Fatalf("eval exited %d: %s", code, errs)
	}
	var r struct {
		Step    int64
		Quality quality
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Step != 30 || r.Quality.Points == nil || r.Quality.N != 300 {
		t.Fatalf("eval json %q: %v", out, err)
	}
	if p := r.Quality.Points; !(p.Energy > p.FloorEnergy) || math.Abs(p.FloorEnergy) > 0.05 {
		t.Errorf("energy distance %v, floor %v: a 30-step model should be far from the truth, a true sample near", p.Energy, p.FloorEnergy)
	}
	out, errs, code = ncsn(t, "eval", "--checkpoint", dir, "--all", "--n", "300", "--held-out", "100", "--steps-per-level", "3", "--json")
	if code != 0 {
		t.Fatalf("eval --all exited %d: %s", code, errs)
	}
	// --steps-per-level reaches every checkpoint's sampler: 10 levels × 3 steps.
	if strings.Count(errs, "sampling: 100% (30/30)") != 3 {
		t.Errorf("eval --all did not sample each checkpoint with 3 steps per level:\n%s", errs)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(errs, "eval.csv") {
		t.Fatalf("eval --all --json: %d lines\n%s\nstderr %s", len(lines), out, errs)
	}
	b, err := os.ReadFile(filepath.Join(dir, "checkpoints", "eval.csv"))
	if err != nil || !strings.HasPrefix(string(b), "step,energy_distance,floor_energy_distance,held_out_loss\n10,") || strings.Count(string(b), "\n") != 4 {
		t.Errorf("eval.csv beside the checkpoints: %v\n%s", err, b)
	}
}

func TestEvalUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"eval", "--samples", "x.npy"}, 2, "--data is required"},
		{[]string{"eval", "--train-features"}, 2, "--data is required"},
		{[]string{"eval", "--samples", "x.npy", "--checkpoint", "d", "--data", "mnist"}, 2, "not both"},
		{[]string{"eval", "--checkpoint", "d", "--data", "mnist"}, 2, "a checkpoint knows its data set"},
		{[]string{"eval", "--all", "--data", "mnist", "--samples", "x.npy"}, 2, "--all scores the checkpoints"},
		{[]string{"eval", "--train-features", "--data", "mnist", "--feature-epochs", "0"}, 2, "--feature-epochs"},
		{[]string{"eval", "--samples", "/nonexistent.npy", "--data", "moons"}, 1, "no such file"},
		{[]string{"eval", "--checkpoint", "/nonexistent", "--all"}, 1, "not a folder of checkpoints"},
		{[]string{"eval", "-h"}, 0, "compare only with"},
	} {
		_, errs, code := ncsn(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("ncsn %v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
}
