package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/keyrand"
	"github.com/ncsn/ncsn/internal/npy"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/samples"
)

// TestExport: the exported weights are the checkpoint's, named and shaped as its layout,
// and refused options say why.
func TestExport(t *testing.T) {
	dir := trainTiny(t, "synthetic")
	for _, weights := range []string{"ema", "raw"} {
		out := filepath.Join(t.TempDir(), "w.safetensors")
		stdout, errs, code := ncsn(t, "export", "--checkpoint", dir, "--weights", weights, "--out", out, "--list")
		if code != 0 {
			t.Fatalf("export exited %d: %s", code, errs)
		}
		if !strings.Contains(stdout, "cout.weight") || !strings.Contains(stdout, "weights: "+out) {
			t.Errorf("export output: %s", stdout)
		}
		rc, c, _, err := samples.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		got, meta, err := model.ReadWeights(out, c.Layout)
		if err != nil {
			t.Fatal(err)
		}
		want := c.Layout.Data
		if weights == "ema" {
			want = c.EMA
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s weights: value %d is %v, the checkpoint's %v", weights, i, got[i], want[i])
			}
		}
		if meta[model.MetaWeights] != weights || meta[model.MetaStep] != "4" || meta[model.MetaConfig] == "" || rc.Model.Arch != "unet" {
			t.Errorf("metadata %v", meta)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"export"}, "--checkpoint is required"},
		{[]string{"export", "--checkpoint", dir, "--weights", "best"}, "want ema or raw"},
		{[]string{"export", "--checkpoint", dir, "--seed", "3"}, "not used by export"},
	} {
		if _, errs, code := ncsn(t, tc.args...); code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("ncsn %v: exit %d, %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
}

// TestExportIntoPyTorch runs docs/export.md's snippet: PyTorch's UNet with the exported
// weights gives the Go network's scores.
func TestExportIntoPyTorch(t *testing.T) {
	if exec.Command("/usr/bin/python3", "-c", "import torch, numpy").Run() != nil {
		t.Skip("needs /usr/bin/python3 with torch and numpy (Debian: python3-torch)")
	}
	bench, err := filepath.Abs("../../../shared/bench")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bench, "torch_ref.py")); err != nil {
		t.Skipf("no torch_ref.py: %v", err)
	}
	doc, err := os.ReadFile("../../docs/export.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```python\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/export.md has no python block")
	}
	if n := strings.Count(strings.TrimSpace(string(m[1])), "\n") + 1; n > 10 {
		t.Errorf("the snippet has %d lines, want at most 10", n)
	}
	snippet := strings.Replace(string(m[1]), `"../shared/bench"`, `"`+bench+`"`, 1)

	dir := trainTiny(t, "synthetic")
	work := t.TempDir()
	if _, errs, code := ncsn(t, "export", "--checkpoint", dir, "--out", filepath.Join(work, "model.safetensors")); code != 0 {
		t.Fatalf("export: %s", errs)
	}
	rc, c, _, err := samples.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	net, err := model.New(rc.Model, rc.Shape())
	if err != nil {
		t.Fatal(err)
	}
	copy(net.Params().Data, c.EMA)
	const batch = 3
	sc, err := net.NewScorer(batch)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	shape := append([]int{batch}, rc.Shape()...)
	dim := 1
	for _, s := range rc.Shape() {
		dim *= s
	}
	x := make([]float32, batch*dim)
	r := keyrand.New(7)
	for i := range x {
		x[i] = float32(r.Float64())
	}
	sigma := []float32{0.05, 0.5, 5}
	out := make([]float32, len(x))
	if err := sc.Score(x, sigma, out); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string][]float32{"x.npy": x, "out.npy": out} {
		if err := npy.WriteFile(filepath.Join(work, name), shape, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := npy.WriteFile(filepath.Join(work, "sigma.npy"), []int{batch}, sigma); err != nil {
		t.Fatal(err)
	}
	check := snippet + `
x, sig, want = (torch.from_numpy(np.load(f)) for f in ("x.npy", "sigma.npy", "out.npy"))
with torch.no_grad():
    got = net(x, sig)
err = ((got - want).norm() / want.norm()).item()
print("relative difference", err)
sys.exit(0 if err < 1e-4 else 1)
`
	cmd := exec.Command("/usr/bin/python3", "-c", check)
	cmd.Dir = work
	b, err := cmd.CombinedOutput()
	t.Logf("%s", b)
	if err != nil {
		t.Fatalf("PyTorch with the exported weights: %v", err)
	}
}
