package model

import (
	"math"
	"slices"
	"testing"
)

// A batch cut into parts, each on its own graph, gives the losses and the summed
// gradient of the whole batch on one graph (up to the order of float32 sums), for
// even and uneven cuts, and the same bits on every run.
func TestGradPartsMatchWhole(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		shape []int
		batch int
		parts int
	}{
		{"mlp/2", Config{Arch: "mlp", Hidden: 16, Depth: 2}, []int{2}, 8, 2},
		{"unet/2", smallUNet, []int{3, 8, 8}, 6, 2},
		{"unet/3-uneven", smallUNet, []int{3, 8, 8}, 7, 3},
		{"unet/more-parts-than-samples", smallUNet, []int{3, 8, 8}, 2, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := New(c.cfg, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			n.Init(5)
			whole, err := n.newGrad(c.batch, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer whole.Close()
			gp, err := n.newGradParts(c.batch, 2, c.parts)
			if err != nil {
				t.Fatal(err)
			}
			defer gp.close()
			if want := min(c.parts, c.batch); len(gp.parts) != want {
				t.Fatalf("%d parts, want %d", len(gp.parts), want)
			}
			dim := prod(c.shape)
			x, z, sigma := batchData[float32](4, c.batch, dim)
			np := len(n.Params().Data)
			gw, lw := make([]float32, np), make([]float32, c.batch)
			if err := whole.Run(x, z, sigma, gw, lw); err != nil {
				t.Fatal(err)
			}
			run := func() ([]float32, []float32) {
				g, l := make([]float32, np), make([]float32, c.batch)
				if err := gp.run(x, z, sigma, g, l); err != nil {
					t.Fatal(err)
				}
				return g, l
			}
			gotG, gotL := run()
			for b := range lw {
				if d := math.Abs(float64(gotL[b] - lw[b])); d > 1e-5*math.Max(1, math.Abs(float64(lw[b]))) {
					t.Errorf("loss %d: parts %v, whole %v", b, gotL[b], lw[b])
				}
			}
			var maxAbs, maxDiff float64
			for i := range gw {
				maxAbs = math.Max(maxAbs, math.Abs(float64(gw[i])))
				maxDiff = math.Max(maxDiff, math.Abs(float64(gotG[i]-gw[i])))
			}
			if maxAbs == 0 || maxDiff > 1e-4*maxAbs {
				t.Errorf("gradient: max difference %g against max magnitude %g", maxDiff, maxAbs)
			}
			againG, againL := run()
			for i := range againG {
				if math.Float32bits(againG[i]) != math.Float32bits(gotG[i]) {
					t.Fatalf("gradient %d differs between runs: %v, %v", i, againG[i], gotG[i])
				}
			}
			for b := range againL {
				if againL[b] != gotL[b] {
					t.Fatalf("loss %d differs between runs", b)
				}
			}
		})
	}
}

// A short input is refused, naming it.
func TestGradPartsChecksLengths(t *testing.T) {
	n, err := New(Config{Arch: "mlp", Hidden: 8, Depth: 1}, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	gp, err := n.newGradParts(4, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer gp.close()
	x, z, sigma := batchData[float32](1, 4, 2)
	err = gp.run(x[:6], z, sigma, make([]float32, len(n.Params().Data)), make([]float32, 4))
	if err == nil || !contains(err.Error(), "x has 6 values") {
		t.Errorf("short x: %v", err)
	}
}

// Batches are cut into contiguous parts whose sizes differ by at most one, never empty.
func TestCutBatch(t *testing.T) {
	for _, c := range []struct {
		batch, k int
		want     []int
	}{
		{8, 2, []int{0, 4, 8}},
		{7, 3, []int{0, 2, 4, 7}},
		{2, 5, []int{0, 1, 2}},
		{5, 0, []int{0, 5}},
	} {
		if got := cutBatch(c.batch, c.k); !slices.Equal(got, c.want) {
			t.Errorf("cutBatch(%d, %d) = %v, want %v", c.batch, c.k, got, c.want)
		}
	}
}
