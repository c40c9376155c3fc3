package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// bench compute --layers prints, for every convolution of the unet, each
// algorithm that applies to it, forward and backward.
func TestBenchComputeLayers(t *testing.T) {
	out, errs, code := ncsn(t, "bench", "compute", "--layers", "--batch", "2", "--iters", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	type line struct {
		Kernel, Layer, Size, Pass, Algo string
		Chosen                          bool
		GFLOP, Sec, GFLOPS              float64
	}
	chosen := map[string]int{} // layer/pass → algorithms marked chosen
	algos := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r line
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if r.Kernel == "" || r.Size == "" || r.GFLOP <= 0 || r.Sec <= 0 || r.GFLOPS <= 0 {
			t.Fatalf("line %q", l)
		}
		algos[r.Layer]++
		if r.Chosen {
			chosen[r.Layer+"/"+r.Pass]++
		}
	}
	// 16 stride-1 layers with three algorithms, 2 stride-2 ones with direct only.
	if len(algos) != 18 || algos["r1.c1"] != 6 || algos["cout"] != 6 || algos["d1"] != 2 || algos["d2"] != 2 {
		t.Fatalf("layers %v", algos)
	}
	for k, n := range chosen {
		if n != 1 {
			t.Errorf("%s: %d algorithms chosen", k, n)
		}
	}
	if len(chosen) != 36 {
		t.Errorf("%d layer passes with a chosen algorithm, want 36", len(chosen))
	}
	if _, errs, code := ncsn(t, "bench", "compute", "--layers", "--net", "mlp"); code != 2 || !strings.Contains(errs, "no convolutions") {
		t.Errorf("--layers --net mlp: exit %d, %s", code, errs)
	}
}
