package samples

import (
	"context"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/keyrand"
	"github.com/ncsn/ncsn/internal/npy"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// smallRun is a run of 8×8 synthetic images (channels images of 8×8) or of
// the 2-D gmm, with a freshly initialised network: these tests check what
// is done with the samples, not how good they are.
func smallRun(t *testing.T, name string, channels int) (config.Config, []float32) {
	t.Helper()
	sets := []string{"data.name=" + name, "data.test_size=40", "data.train_size=40"}
	if name == data.NameSynthetic {
		sets = append(sets, "data.image_size=8", "model.channels=[8,8,8]", "data.channels="+strconv.Itoa(channels))
	}
	rc, err := config.Load("", sets)
	if err != nil {
		t.Fatal(err)
	}
	if rc, _, err = rc.Resolve(); err != nil { // the image defaults are NCSNv2's auto schedule
		t.Fatal(err)
	}
	net, err := model.New(rc.Model, rc.Shape())
	if err != nil {
		t.Fatal(err)
	}
	return rc, net.Params().Data
}

func quick(n int) Options {
	return Options{N: n, Seed: 3, Sample: model.SampleConfig{StepsPerLevel: 2, Eps: 2e-5, Denoise: true}}
}

func readPNGFile(t *testing.T, path string) (w, h int, at func(x, y int) uint8) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	return b.Dx(), b.Dy(), func(x, y int) uint8 {
		r, _, _, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
		return uint8(r >> 8)
	}
}

// Every output form holds the samples: .npy reads back as [N, C, H, W]
// clamped to [0, 1] (points as [N, 2], unclamped), a folder holds one PNG per
// image at native size, and forms that do not fit the data are refused.
func TestWriteForms(t *testing.T) {
	img, _ := smallRun(t, data.NameSynthetic, 3)
	pts, _ := smallRun(t, data.NameGMM, 0)
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	// Two 3×8×8 images, values spread over [−0.5, 1.5) to exercise clamping.
	x := make([]float32, 2*3*8*8)
	for i := range x {
		x[i] = float32(i%97)/48.5 - 0.5
	}
	x[5] = float32(math.NaN())
	xy := []float32{-7.5, 3, 12, -0.25}
	for _, tc := range []struct {
		name, path string
		rc         config.Config
		x          []float32
		check      func(t *testing.T, path string)
	}{
		{"images npy", filepath.Join(dir, "s.npy"), img, x, func(t *testing.T, p string) {
			shape, got, err := npy.ReadFile(p)
			if err != nil || len(shape) != 4 || shape[0] != 2 || shape[1] != 3 || shape[2] != 8 || shape[3] != 8 {
				t.Fatalf("shape %v, err %v", shape, err)
			}
			for i, v := range got {
				want := min(max(x[i], 0), 1)
				if i == 5 {
					want = 0
				}
				if v != want {
					t.Fatalf("value %d: %v, want %v", i, v, want)
				}
			}
		}},
		{"points npy", filepath.Join(dir, "p.npy"), pts, xy, func(t *testing.T, p string) {
			shape, got, err := npy.ReadFile(p)
			if err != nil || len(shape) != 2 || shape[0] != 2 || shape[1] != 2 {
				t.Fatalf("shape %v, err %v", shape, err)
			}
			for i := range xy {
				if got[i] != xy[i] {
					t.Fatalf("point values %v, want %v", got, xy)
				}
			}
		}},
		{"folder by slash", filepath.Join(dir, "new") + "/", img, x, checkFolder(x)},
		{"existing folder", existing, img, x, checkFolder(x)},
		{"grid", filepath.Join(dir, "g.png"), img, x, func(t *testing.T, p string) {
			// 2 images in a row of 2, each 8 pixels scaled ×8, with 2-pixel borders.
			if w, h, _ := readPNGFile(t, p); w != 2*(64+2)+2 || h != 64+4 {
				t.Fatalf("grid %d×%d", w, h)
			}
		}},
		{"csv", filepath.Join(dir, "p.csv"), pts, xy, func(t *testing.T, p string) {
			if b, err := os.ReadFile(p); err != nil || string(b) != "x,y\n-7.5,3\n12,-0.25\n" {
				t.Fatalf("csv %q, %v", b, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Write(tc.path, tc.rc, tc.x); err != nil {
				t.Fatal(err)
			}
			tc.check(t, tc.path)
		})
	}
	for _, tc := range []struct {
		path string
		rc   config.Config
		want string
	}{
		{"s.csv", img, "FILE.png"},
		{"s.jpg", img, "FILE.npy"},
		{"p.png", pts, "FILE.csv"},
		{existing, pts, "FILE.csv"},
	} {
		if err := CheckOut(tc.path, tc.rc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckOut(%s, %s) = %v, want an error naming %s", tc.path, tc.rc.Data.Name, err, tc.want)
		}
	}
}

// checkFolder checks a folder of 000000.png … holding x's 3×8×8 images.
func checkFolder(x []float32) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		for i := 0; i < 2; i++ {
			w, h, at := readPNGFile(t, filepath.Join(dir, []string{"000000.png", "000001.png"}[i]))
			if w != 8 || h != 8 {
				t.Fatalf("image %d is %d×%d, want 8×8", i, w, h)
			}
			for p := 0; p < 64; p++ {
				v := x[i*192+p] // the red channel
				want := uint8(math.Round(float64(min(max(v, 0), 1)) * 255))
				if math.IsNaN(float64(v)) {
					want = 0
				}
				if got := at(p%8, p/8); got != want {
					t.Fatalf("image %d pixel %d: red %d, want %d", i, p, got, want)
				}
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "000002.png")); err == nil {
			t.Fatal("a third image was written for two samples")
		}
	}
}

// With --init data the chains start at held-out example perm[i] plus σ·z,
// perm and z keyed by the seed: a step size too small to move them leaves
// that start as the output. Annealing starts at σ_1, plain Langevin at σ_L.
func TestInitDataStartsAtNoisedData(t *testing.T) {
	rc, params := smallRun(t, data.NameSynthetic, 1)
	_, test, err := data.Open(rc.Data, rc.Run.Seed)
	if err != nil {
		t.Fatal(err)
	}
	sigmas := rc.Noise.Sigmas()
	for _, tc := range []struct {
		sampler  string
		sigma    float64
		centered bool
	}{
		{"annealed", sigmas[0], false},
		{"langevin", sigmas[len(sigmas)-1], false},
		// Centred data: the chain starts at 2x−1 + σz, returned as (that + 1)/2.
		{"annealed", sigmas[0], true},
	} {
		rc := rc
		rc.Data.Centered = tc.centered
		const n, d = 50, 64 // more samples than the 40 held-out images: they cycle
		o := Options{N: n, Seed: 7, Sampler: tc.sampler, Init: InitData, Batch: 16,
			Sample: model.SampleConfig{StepsPerLevel: 1, Eps: 1e-30}}
		x, err := Draw(context.Background(), rc, params, o)
		if err != nil {
			t.Fatal(err)
		}
		perm := make([]int, test.Len())
		keyrand.New(7, startTag).Perm(perm)
		ex := make([]float32, d)
		var r keyrand.Stream
		for i := 0; i < n; i++ {
			test.Example(perm[i%len(perm)], ex)
			r.Reset(7, startTag, uint64(i))
			for j := 0; j < d; j++ {
				noise := tc.sigma * r.Norm()
				want := float64(ex[j]) + noise
				if tc.centered {
					want = float64(ex[j]) + noise/2
				}
				if math.Abs(float64(x[i*d+j])-want) > 1e-5 {
					t.Fatalf("%s (centred %v): sample %d value %d starts at %v, want held-out image %d + σ z = %v", tc.sampler, tc.centered, i, j, x[i*d+j], perm[i%len(perm)], want)
				}
			}
		}
	}
	if _, err := Draw(context.Background(), rc, params, Options{N: 1, Init: "zeros", Sample: quick(1).Sample}); err == nil || !strings.Contains(err.Error(), "uniform") {
		t.Fatalf("unknown init: %v", err)
	}
}
