package samples

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/imageset"
	"github.com/ncsn/ncsn/internal/keyrand"
	"github.com/ncsn/ncsn/internal/metric"
)

// smallRecipe trains in a second or two on 16×16 synthetic images.
func smallRecipe(examples, epochs int) FeatureRecipe {
	r := DefaultFeatureRecipe()
	r.Widths, r.Examples, r.Epochs = []int{8, 16, 32}, examples, epochs
	return r
}

var synthetic16 = data.Config{Name: data.NameSynthetic, ImageSize: 16, TrainSize: 4000, TestSize: 2000}

func uniform(key uint64, n int) []float32 {
	r := keyrand.New(key)
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.Float64())
	}
	return x
}

// TestReferenceImages: real held-out images score near the floor, uniform
// noise far above it; a model that returns its training images is caught by
// the nearest-neighbour check.
func TestReferenceImages(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ref, err := NewReference(ctx, synthetic16, 1, ReferenceOptions{Seed: 1, KID: metric.KIDOptions{Subsets: 20},
		Features: FeatureOptions{CacheDir: dir, Recipe: smallRecipe(0, 5)}})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	f := ref.feat
	t.Logf("feature network: %.1f%% test accuracy, trained in %v", 100*f.Accuracy, f.TrainTime)
	if !f.Trained || f.Accuracy < 0.9 {
		t.Fatalf("feature network trained %v, accuracy %.3f: want a fresh network above 90%%", f.Trained, f.Accuracy)
	}
	_, test, err := data.Open(synthetic16, 1)
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	real, err := ref.Score(ctx, examples(test, n), "")
	if err != nil {
		t.Fatal(err)
	}
	noise, err := ref.Score(ctx, uniform(3, n*256), "")
	if err != nil {
		t.Fatal(err)
	}
	r, z := real.Images, noise.Images
	t.Logf("real: FID %.3f (floor %.3f), KID %.5f ± %.5f (floor %.5f); noise: FID %.1f, KID %.3f", r.FID, r.FloorFID, r.KID, r.KIDStd, r.FloorKID, z.FID, z.KID)
	if real.N != n || real.Reference != 2000 || r.FloorFID != z.FloorFID || r.ClassifierAccuracy != f.Accuracy || r.Classifier != f.Path {
		t.Errorf("report %+v %+v", real, r)
	}
	if r.FID > 2*r.FloorFID+0.5 || r.KID > r.FloorKID+3*max(r.KIDStd, r.FloorKIDStd)+1e-3 {
		t.Errorf("real images: FID %.3f, KID %.5f; floor %.3f, %.5f: want them near the floor", r.FID, r.KID, r.FloorFID, r.FloorKID)
	}
	if z.FID < 20*r.FloorFID+5 || z.KID < 10*r.FloorKID+0.05 {
		t.Errorf("uniform noise: FID %.3f, KID %.5f; floor %.3f, %.5f: want them far above", z.FID, z.KID, r.FloorFID, r.FloorKID)
	}
	// Real images are no closer to the training set than other real images.
	if math.Abs(r.NNDistance-r.NNDistanceReal) > 0.2*r.NNDistanceReal || r.NNCount != n {
		t.Errorf("nearest training image: real %.3f, held-out %.3f over %d", r.NNDistance, r.NNDistanceReal, r.NNCount)
	}

	// Training images themselves: their nearest training image is at 0.
	train, _, _ := data.Open(synthetic16, 1)
	copies := examples(train, 300)
	nn := filepath.Join(dir, "nn.png")
	mem, err := ref.Score(ctx, copies, nn)
	if err != nil {
		t.Fatal(err)
	}
	if m := mem.Images; m.NNDistance != 0 || m.NNDistanceReal < 0.5 || m.NNImage != nn {
		t.Errorf("memorised: nearest distance %v, held-out %v, image %q", m.NNDistance, m.NNDistanceReal, m.NNImage)
	}
	b, err := os.ReadFile(nn)
	if err != nil {
		t.Fatal(err)
	}
	grid, err := imageset.DecodeGrid(b, []int{1, 16, 16})
	if err != nil {
		t.Fatal(err)
	}
	// 8 rows of a sample and its 3 nearest training images; the nearest is itself.
	if len(grid) != 8*4*256 {
		t.Fatalf("neighbour image holds %d images", len(grid)/256)
	}
	for row := 0; row < 8; row++ {
		s, nearest := grid[row*4*256:(row*4+1)*256], grid[(row*4+1)*256:(row*4+2)*256]
		for i := range s {
			if math.Abs(float64(s[i]-copies[row*256+i])) > 0.5/255 || s[i] != nearest[i] {
				t.Fatalf("row %d: the sample is not shown beside itself", row)
			}
		}
	}
	if _, err := ref.Score(ctx, copies[:300], ""); err == nil {
		t.Error("a ragged sample set was accepted")
	}
}

// TestReferenceColour: 3-channel images (CIFAR-10's shape) go through the
// same path: the feature network, the scores and the neighbour image.
func TestReferenceColour(t *testing.T) {
	ctx := context.Background()
	dc := data.Config{Name: data.NameSynthetic, ImageSize: 32, Channels: 3, TrainSize: 1000, TestSize: 500}
	ref, err := NewReference(ctx, dc, 1, ReferenceOptions{Seed: 1, KID: metric.KIDOptions{Subsets: 10},
		Features: FeatureOptions{CacheDir: t.TempDir(), Recipe: smallRecipe(0, 2)}})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	_, test, _ := data.Open(dc, 1)
	nn := filepath.Join(t.TempDir(), "nn.png")
	real, err := ref.Score(ctx, examples(test, 200), nn)
	if err != nil {
		t.Fatal(err)
	}
	noise, err := ref.Score(ctx, uniform(5, 200*3*32*32), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("real FID %.4f (floor %.4f), noise %.2f", real.Images.FID, real.Images.FloorFID, noise.Images.FID)
	if noise.Images.FID < 10*real.Images.FID {
		t.Errorf("colour: real FID %.4f, noise %.4f", real.Images.FID, noise.Images.FID)
	}
	b, err := os.ReadFile(nn)
	if err != nil {
		t.Fatal(err)
	}
	if grid, err := imageset.DecodeGrid(b, []int{3, 32, 32}); err != nil || len(grid) != 8*4*3*32*32 {
		t.Errorf("colour neighbour image: %v", err)
	}
}

// TestReferencePoints: a true sample of a toy scores near the floor, uniform
// points far above it.
func TestReferencePoints(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{data.NameGMM, data.NameRings, data.NameMoons, data.NameCheckerboard} {
		t.Run(name, func(t *testing.T) {
			dc := data.Config{Name: name, TrainSize: 2000, TestSize: 2000}
			ref, err := NewReference(ctx, dc, 1, ReferenceOptions{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			// Another seed draws another true sample.
			other, _, err := data.Open(dc, 2)
			if err != nil {
				t.Fatal(err)
			}
			const n = 1000
			truth, err := ref.Score(ctx, examples(other, n), "")
			if err != nil {
				t.Fatal(err)
			}
			box := uniform(4, 2*n)
			for i := range box {
				box[i] = 16*box[i] - 8
			}
			noise, err := ref.Score(ctx, box, "")
			if err != nil {
				t.Fatal(err)
			}
			p, q := truth.Points, noise.Points
			t.Logf("truth %.5f, floor %.5f, uniform %.5f", p.Energy, p.FloorEnergy, q.Energy)
			if p.Energy > 3*p.FloorEnergy+0.01 || q.Energy < 20*p.FloorEnergy+0.2 || p.FloorEnergy != q.FloorEnergy {
				t.Errorf("energy distance: true sample %.5f, uniform %.5f, floor %.5f", p.Energy, q.Energy, p.FloorEnergy)
			}
			box[5] = float32(math.NaN())
			if _, err := ref.Score(ctx, box, ""); err == nil || !strings.Contains(err.Error(), "diverged") {
				t.Errorf("NaN samples: %v", err)
			}
		})
	}
}

// TestFeatureCache: a cached network is reused; a corrupt or mismatched file
// is ignored with a warning and the network trained again.
func TestFeatureCache(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var logs bytes.Buffer
	dc := data.Config{Name: data.NameSynthetic, ImageSize: 16, TrainSize: 600, TestSize: 300}
	load := func(seed uint64, r FeatureRecipe) *Features {
		t.Helper()
		train, test, err := data.Open(dc, seed)
		if err != nil {
			t.Fatal(err)
		}
		f, err := LoadFeatures(ctx, dc.Name, train, test, FeatureOptions{CacheDir: dir, Recipe: r, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a := smallRecipe(500, 1)
	first := load(1, a)
	if !first.Trained || filepath.Dir(first.Path) != dir {
		t.Fatalf("first load: trained %v, path %s", first.Trained, first.Path)
	}
	cached := load(1, a)
	if cached.Trained || cached.Path != first.Path || cached.Accuracy != first.Accuracy || !slices.Equal(cached.Net.Params().Data, first.Net.Params().Data) ||
		len(first.TestFeatures) != 300*32 || !slices.Equal(cached.TestFeatures, first.TestFeatures) {
		t.Fatalf("second load: trained %v, accuracy %v (first %v)", cached.Trained, cached.Accuracy, first.Accuracy)
	}
	if logs.Len() != 0 {
		t.Fatalf("warnings on a good cache: %s", logs.String())
	}
	// Training is reproducible: the same recipe gives the same weights.
	if err := os.Remove(first.Path); err != nil {
		t.Fatal(err)
	}
	again := load(1, a)
	if !again.Trained || !slices.Equal(again.Net.Params().Data, first.Net.Params().Data) {
		t.Fatal("retraining the same recipe gave other weights")
	}

	// Corrupt: a flipped byte fails the file's checksum.
	b, _ := os.ReadFile(first.Path)
	b[len(b)-5] ^= 0xff
	os.WriteFile(first.Path, b, 0o644)
	if f := load(1, a); !f.Trained || !strings.Contains(logs.String(), "ignoring") {
		t.Fatalf("corrupt cache file: trained %v, log %q", f.Trained, logs.String())
	}
	if f := load(1, a); f.Trained {
		t.Fatal("the retrained network was not cached again")
	}

	// Mismatched: another recipe's file under this recipe's name.
	other := smallRecipe(500, 2)
	o := load(1, other)
	if o.Path == first.Path {
		t.Fatal("two recipes share a cache file")
	}
	os.Rename(first.Path, o.Path)
	logs.Reset()
	if f := load(1, other); !f.Trained || !strings.Contains(logs.String(), "other data or another recipe") {
		t.Fatalf("mismatched cache file: trained %v, log %q", f.Trained, logs.String())
	}
	// Other data (another seed of the generated set) has its own file.
	if f := load(2, a); !f.Trained || f.Path == first.Path {
		t.Fatalf("other data: trained %v, path %s", f.Trained, f.Path)
	}

	// Bad recipes and data without labels are refused.
	bad := smallRecipe(500, 0)
	train, test, _ := data.Open(dc, 1)
	if _, err := LoadFeatures(ctx, dc.Name, train, test, FeatureOptions{CacheDir: dir, Recipe: bad}); err == nil || !strings.Contains(err.Error(), "--feature-epochs") {
		t.Errorf("0 epochs: %v", err)
	}
	ptrain, ptest, _ := data.Open(data.Config{Name: data.NameMoons}, 1)
	if _, err := LoadFeatures(ctx, "moons", ptrain, ptest, FeatureOptions{CacheDir: dir, Recipe: a}); err == nil || !strings.Contains(err.Error(), "energy distance") {
		t.Errorf("points: %v", err)
	}
}

func TestCacheDir(t *testing.T) {
	t.Setenv(CacheEnv, "")
	t.Setenv("XDG_CACHE_HOME", "/x/cache")
	for _, c := range []struct{ flag, env, want string }{
		{"/f", "/e", "/f"},
		{"", "/e", "/e"},
		{"", "", "/x/cache/ncsn"},
	} {
		t.Setenv(CacheEnv, c.env)
		if got, err := CacheDir(c.flag); err != nil || got != c.want {
			t.Errorf("CacheDir(%q) with %s=%q: %q, %v; want %q", c.flag, CacheEnv, c.env, got, err, c.want)
		}
	}
}

// TestHeldOutDequantized: held-out images are dequantized like training
// batches (each pixel spread over its 8-bit bin), reproducibly, and left raw
// when the run did not dequantize.
func TestHeldOutDequantized(t *testing.T) {
	test := data.NewSynthetic(16, 3, 1, data.Test, 20)
	raw := heldOutPrepared(test, 20, data.Config{}, 7)
	deq := heldOutPrepared(test, 20, data.Config{Dequantize: true}, 7)
	if !slices.Equal(raw, examples(test, 20)) {
		t.Fatal("without dequantization the held-out images are not the raw examples")
	}
	moved := 0
	for i, v := range raw {
		level := math.Round(float64(v) * 255)
		if d := float64(deq[i]); d < level/256 || d >= (level+1)/256 {
			t.Fatalf("value %d: raw %v dequantized to %v, outside its bin [%v, %v)", i, v, d, level/256, (level+1)/256)
		}
		if deq[i] != v {
			moved++
		}
	}
	if moved < len(raw)*99/100 || !slices.Equal(deq, heldOutPrepared(test, 20, data.Config{Dequantize: true}, 7)) || slices.Equal(deq, heldOutPrepared(test, 20, data.Config{Dequantize: true}, 8)) {
		t.Errorf("%d of %d values moved; want nearly all, the same for one seed and other for another", moved, len(raw))
	}
}

func TestWriteSweep(t *testing.T) {
	dir := t.TempDir()
	rep := func(step int64, fid float64) *Report {
		return &Report{Dataset: "synthetic", Step: step, Levels: []LevelReport{{Sigma: 1, HeldOutLoss: 2}, {Sigma: 0.1, HeldOutLoss: 4}},
			Quality: &Quality{N: 100, Reference: 200, Images: &ImageQuality{FID: fid, KID: fid / 100, KIDStd: 0.001, FloorFID: 1, FloorKID: 0.001, NNDistance: 3, NNDistanceReal: 3.5}}}
	}
	csv, png, err := WriteSweep(dir, []*Report{rep(500, 40), rep(1000, 20.5)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(csv)
	want := "step,fid,kid,kid_std,floor_fid,floor_kid,nn_distance,nn_distance_real,held_out_loss\n" +
		"500,40,0.4,0.001,1,0.001,3,3.5,3\n1000,20.5,0.205,0.001,1,0.001,3,3.5,3\n"
	if string(b) != want {
		t.Errorf("eval.csv:\n%s\nwant\n%s", b, want)
	}
	if st, err := os.Stat(png); err != nil || st.Size() < 1000 {
		t.Errorf("eval.png: %v", err)
	}
	pts := &Report{Dataset: "moons", Step: 5, Quality: &Quality{N: 10, Points: &PointQuality{Energy: 0.5, FloorEnergy: 0.01}}}
	if csv, _, err = WriteSweep(dir, []*Report{pts}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(csv); !strings.HasPrefix(string(b), "step,energy_distance,floor_energy_distance,held_out_loss\n5,0.5,0.01,0\n") {
		t.Errorf("points eval.csv: %s", b)
	}
	if _, _, err := WriteSweep(dir, []*Report{rep(1, 2), pts}); err == nil {
		t.Error("reports scored differently were written as one table")
	}
}
