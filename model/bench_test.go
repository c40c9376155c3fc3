package model

import (
	"math"
	"testing"
)

// The reference figures of shared/bench/REFERENCE.md.
func TestForwardFLOPsMatchReference(t *testing.T) {
	if got := ForwardFLOPs(Config{Arch: "unet"}, []int{1, 28, 28}) / 1e6; math.Abs(got-275.5) > 0.05 {
		t.Fatalf("unet: %.3f MFLOP per sample, REFERENCE.md says 275.5", got)
	}
	// mlp: 2·(3·128 + 128·128·2 + 128·2).
	if got := ForwardFLOPs(Config{Arch: "mlp"}, []int{2}); got != 2*(3*128+2*128*128+128*2) {
		t.Fatalf("mlp: %v FLOP", got)
	}
}

func TestBenchStepRuns(t *testing.T) {
	r, err := BenchStep(Config{Arch: "mlp"}, []int{2}, 16, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r.Params != 33794 || r.SamplesPerSec <= 0 || r.Net != "mlp" || r.Batch != 16 {
		t.Fatalf("%+v", r)
	}
}
