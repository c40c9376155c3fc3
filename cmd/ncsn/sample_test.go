package main

import (
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/npy"
)

// trainTiny trains a few steps of a tiny run (8×8 synthetic images with a
// narrow U-Net, or the 2-D gmm) into a temporary folder, in well under a
// second, and returns the folder.
func trainTiny(t *testing.T, dataset string) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"train", "--out", dir, "--set", "data.name=" + dataset, "--set", "run.steps=4",
		"--set", "run.checkpoint_every=4", "--set", "run.samples=0", "--set", "train.global_batch=8",
		"--set", "data.train_size=64", "--set", "data.test_size=40"}
	if dataset == "synthetic" {
		args = append(args, "--set", "data.image_size=8", "--set", "model.channels=[8,8,8]")
	}
	if _, errs, code := ncsn(t, args...); code != 0 {
		t.Fatalf("train exited %d: %s", code, errs)
	}
	return dir
}

func readNPY(t *testing.T, path string, shape ...int) []float32 {
	t.Helper()
	s, x, err := npy.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != len(shape) {
		t.Fatalf("%s: shape %v, want %v", path, s, shape)
	}
	for i := range s {
		if s[i] != shape[i] {
			t.Fatalf("%s: shape %v, want %v", path, s, shape)
		}
	}
	return x
}

// Samples written as .npy read back as [N, C, H, W] in [0, 1]; the same
// draw written as a folder holds them as PNGs; the .npy is then inpainted
// (as a user would feed numpy data back) and the completions keep its known
// pixels exactly.
func TestSampleNPYRoundTrip(t *testing.T) {
	run := trainTiny(t, "synthetic")
	dir := t.TempDir()
	s := filepath.Join(dir, "s.npy")
	base := []string{"sample", "--checkpoint", run, "--steps-per-level", "2", "--seed", "4"}
	if out, errs, code := ncsn(t, append(base, "--n", "5", "--out", s)...); code != 0 || !strings.Contains(out, s) {
		t.Fatalf("sample to .npy: exit %d, %s %s", code, out, errs)
	}
	x := readNPY(t, s, 5, 1, 8, 8)
	for i, v := range x {
		if !(v >= 0 && v <= 1) {
			t.Fatalf("value %d is %v, outside [0, 1]", i, v)
		}
	}
	folder := filepath.Join(dir, "pngs") + "/"
	if _, errs, code := ncsn(t, append(base, "--n", "5", "--out", folder)...); code != 0 {
		t.Fatalf("sample to a folder: exit %d, %s", code, errs)
	}
	for i := 0; i < 5; i++ {
		f, err := os.Open(filepath.Join(folder, fmt.Sprintf("%06d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for p := 0; p < 64; p++ {
			r, _, _, _ := img.At(p%8, p/8).RGBA()
			if want := uint32(math.Round(float64(x[i*64+p]) * 255)); r>>8 != want {
				t.Fatalf("image %d pixel %d: PNG has %d, the .npy %v", i, p, r>>8, x[i*64+p])
			}
		}
	}

	c := filepath.Join(dir, "c.npy")
	out, errs, code := ncsn(t, append(base, "--inpaint", s, "--mask", "quarter", "--n", "3", "--out", c)...)
	if code != 0 || !strings.Contains(out, "5 images × 3 completions") {
		t.Fatalf("inpaint: exit %d, %s %s", code, out, errs)
	}
	got := readNPY(t, c, 15, 1, 8, 8)
	filled := 0
	for i := 0; i < 5; i++ {
		for k := 0; k < 3; k++ {
			for p := 0; p < 64; p++ {
				v, orig := got[(i*3+k)*64+p], x[i*64+p]
				switch {
				case p%8 < 4 || p/8 < 4: // known: all but the bottom-right quarter
					if v != orig {
						t.Fatalf("completion %d of image %d: known pixel %d is %v, the input has %v", k, i, p, v, orig)
					}
				case v != orig:
					filled++
				}
			}
		}
	}
	if filled < 15*16/2 {
		t.Fatalf("only %d of %d unknown pixels differ from the input", filled, 15*16)
	}
}

// Inpainting held-out images to a PNG gives a grid with one row per image
// (masked input, K completions, original); --init data runs too.
func TestSampleInpaintGrid(t *testing.T) {
	run := trainTiny(t, "synthetic")
	g := filepath.Join(t.TempDir(), "g.png")
	out, errs, code := ncsn(t, "sample", "--checkpoint", run, "--steps-per-level", "2", "--inpaint", "test:3-5",
		"--mask", "random", "--n", "4", "--init", "data", "--out", g)
	if code != 0 || !strings.Contains(out, "3 images × 4 completions: "+g) {
		t.Fatalf("inpaint: exit %d, %s %s", code, out, errs)
	}
	f, err := os.Open(g)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	// 8-pixel images scaled ×8, 2-pixel borders: 4+2 cells across, 3 rows.
	if cfg.Width != 6*66+2 || cfg.Height != 3*66+2 {
		t.Fatalf("grid %d×%d, want %d×%d", cfg.Width, cfg.Height, 6*66+2, 3*66+2)
	}
}

// 2-D samples go to .npy as [N, 2], here started from held-out points (--init data).
func TestSamplePointsNPY(t *testing.T) {
	run := trainTiny(t, "gmm")
	p := filepath.Join(t.TempDir(), "p.npy")
	if _, errs, code := ncsn(t, "sample", "--checkpoint", run, "--n", "7", "--steps-per-level", "2", "--init", "data", "--out", p); code != 0 {
		t.Fatalf("sample: exit %d, %s", code, errs)
	}
	readNPY(t, p, 7, 2)
}

func TestSampleUsageErrors(t *testing.T) {
	img, pts := trainTiny(t, "synthetic"), trainTiny(t, "gmm")
	dir := t.TempDir()
	wide := filepath.Join(dir, "wide.npy")
	if err := npy.WriteFile(wide, []int{8, 9}, make([]float32, 72)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--checkpoint", img, "--mask", "half"}, "--mask needs --inpaint"},
		{[]string{"--checkpoint", img, "--init", "zeros"}, `--init "zeros": want uniform or data`},
		{[]string{"--checkpoint", img, "--n", "0"}, "--n 0"},
		{[]string{"--checkpoint", img, "--inpaint", "test:0", "--sampler", "langevin"}, "--inpaint runs the annealed sampler"},
		{[]string{"--checkpoint", img, "--out", filepath.Join(dir, "s.csv")}, "FILE.png (a grid), FILE.npy or a folder"},
		{[]string{"--checkpoint", img, "--inpaint", "test:0", "--mask", wide}, "has shape [8 9]; want [8 8] (H×W) or [1 8 8]"},
		{[]string{"--checkpoint", img, "--inpaint", "test:40"}, "has 40 images (0 to 39)"},
		{[]string{"--checkpoint", pts, "--out", dir}, "FILE.csv or FILE.npy"},
		{[]string{"--checkpoint", pts, "--inpaint", "test:0", "--out", filepath.Join(dir, "p.npy")}, "inpainting needs an image dataset"},
	} {
		_, errs, code := ncsn(t, append([]string{"sample"}, tc.args...)...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("sample %v: exit %d, %q; want exit 2 and %q", tc.args, code, errs, tc.want)
		}
	}
}
