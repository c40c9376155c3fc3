package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// train.loss through the real CLI: a sliced estimator trains the toy, and an
// estimator the network cannot run is refused before anything starts.
func TestTrainLoss(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := ncsn(t, "train", "--out", dir, "--set", "data.name=gmm", "--set", "train.loss=ssm_vr", "--set", "train.projection=gaussian",
		"--set", "run.steps=5", "--set", "run.samples=0", "--log-level", "error"); code != 0 {
		t.Fatalf("train with ssm_vr: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "checkpoints", "ckpt-5.safetensors")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sets []string
		want []string
	}{
		{[]string{"train.loss=ssm"}, []string{"train.loss", "model.arch unet", "fd_ssm"}},
		{[]string{"train.loss=esm", "data.name=gmm", "data.means=[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]", "data.weights=[1]"}, []string{"train.loss", "D = 17", "ssm_vr or fd_ssm"}},
		{[]string{"train.anneal_power=9"}, []string{"train.anneal_power"}},
	} {
		args := []string{"train", "--out", t.TempDir()}
		for _, s := range tc.sets {
			args = append(args, "--set", s)
		}
		_, errs, code := ncsn(t, args...)
		for _, w := range tc.want {
			if code != 2 || !strings.Contains(errs, w) {
				t.Errorf("ncsn %v: exit %d, %q; want 2 and %q", args, code, errs, w)
			}
		}
	}
}
