// Package samples draws samples from a trained score network, completes
// partly known images (inpainting), and writes samples where a person looks
// (a PNG grid for images, CSV and a scatter plot for 2-D points) or as data
// (a NumPy .npy array, a folder of PNGs).
package samples

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/keyrand"
	"github.com/ncsn/ncsn/internal/npy"
	"github.com/ncsn/ncsn/internal/plot"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// Where the chains start (Options.Init).
const (
	// InitUniform starts from U[0,1] for images, a box around 2-D data.
	InitUniform = "uniform"
	// InitData starts from held-out examples noised to the sampler's first
	// σ, as NCSNv2 does (its data_init).
	InitData = "data"
)

// Options selects the sampler and its settings.
type Options struct {
	N       int
	Seed    uint64
	Sampler string // "annealed" (default) or "langevin"
	Sample  model.SampleConfig
	// Init is InitUniform (default) or InitData.
	Init string
	// Inpaint, if set, holds the known values of each of the N samples
	// (N×D each); only the annealed sampler inpaints.
	Inpaint *model.Inpainting
	// Batch bounds how many samples are evaluated at once (default 256 for
	// images, 1000 for 2-D points).
	Batch    int
	Progress func(done, total int)
}

// Draw samples from a network with parameters params under run config rc.
// The result is N×D values.
func Draw(ctx context.Context, rc config.Config, params []float32, o Options) ([]float32, error) {
	if o.N < 1 {
		return nil, fmt.Errorf("samples: n = %d, want >= 1", o.N)
	}
	// An unresolved auto schedule has no σ levels yet.
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("samples: %w", err)
	}
	shape := rc.Shape()
	net, err := model.New(rc.Model, shape)
	if err != nil {
		return nil, err
	}
	if len(params) != len(net.Params().Data) {
		return nil, fmt.Errorf("samples: %d parameters for a model of %d", len(params), len(net.Params().Data))
	}
	copy(net.Params().Data, params)
	dim := 1
	for _, d := range shape {
		dim *= d
	}
	image := len(shape) == 3
	batch := o.Batch
	if batch <= 0 {
		// Past these sizes a bigger batch only costs cache misses.
		batch = 1000
		if image {
			batch = 256
		}
	}
	batch = min(batch, o.N)
	sc, err := net.NewScorer(batch)
	if err != nil {
		return nil, err
	}
	defer sc.Close()
	x := make([]float32, o.N*dim)
	if image {
		// The data's range in the model's space: [0, 1], or [−1, 1] when centred.
		lo, hi := rc.Data.Range()
		model.InitUniform(x, lo, hi, o.Seed)
	} else {
		// A box around the data: the toys live in about [−5, 5]².
		model.InitUniform(x, -8, 8, o.Seed)
	}
	s := &model.Sampler{Model: sc, Batch: batch, Dim: dim, Seed: o.Seed, Progress: o.Progress}
	sigmas := rc.Noise.Sigmas()
	switch o.Init {
	case "", InitUniform:
	case InitData:
		// The first σ the sampler runs at: plain Langevin runs at the smallest.
		first := sigmas[0]
		if o.Sampler == "langevin" {
			first = sigmas[len(sigmas)-1]
		}
		if err := startFromData(x, rc, first, o.Seed); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("samples: init %q, want %s or %s", o.Init, InitUniform, InitData)
	}
	switch o.Sampler {
	case "", "annealed":
		if o.Inpaint != nil {
			err = s.Inpaint(ctx, x, sigmas, o.Sample, *o.Inpaint)
		} else {
			err = s.Annealed(ctx, x, sigmas, o.Sample)
		}
	case "langevin":
		if o.Inpaint != nil {
			return nil, fmt.Errorf("samples: inpainting needs the annealed sampler, not langevin")
		}
		// Plain Langevin at the smallest σ, as many steps as annealing takes.
		err = s.Langevin(ctx, x, sigmas[len(sigmas)-1], o.Sample.StepsPerLevel*len(sigmas), o.Sample.Eps)
	default:
		return nil, fmt.Errorf("samples: sampler %q, want annealed or langevin", o.Sampler)
	}
	if err != nil {
		return nil, err
	}
	// Back to [0, 1] before anything writes or scores the samples.
	rc.Data.Restore(x)
	return x, nil
}

// startTag separates the data start's draws from the seed's other uses.
const startTag = 0x73746172 // "star"

// startFromData sets sample i to x_data + σ·z, where x_data is example
// perm[i mod len] of the held-out split (perm a permutation keyed by seed)
// and z is keyed by (seed, i).
func startFromData(x []float32, rc config.Config, sigma float64, seed uint64) error {
	_, test, err := data.Open(rc.Data, rc.Run.Seed)
	if err != nil {
		return fmt.Errorf("samples: init from data: %w", err)
	}
	if test == nil {
		return fmt.Errorf("samples: init from data needs %s's held-out split, and %s has none: use init uniform", rc.Data.Name, rc.Data.Path)
	}
	dim := data.Size(test)
	if len(x)%dim != 0 {
		return fmt.Errorf("samples: init from data: %d values are not samples of %d", len(x), dim)
	}
	perm := make([]int, test.Len())
	keyrand.New(seed, startTag).Perm(perm)
	var r keyrand.Stream
	for i := 0; i < len(x)/dim; i++ {
		xi := x[i*dim : (i+1)*dim]
		test.Example(perm[i%len(perm)], xi)
		rc.Data.Centre(xi) // the chains run in the model's space
		r.Reset(seed, startTag, uint64(i))
		for j := range xi {
			xi[j] += float32(sigma * r.Norm())
		}
	}
	return nil
}

// Write stores samples at path, in the form its name asks for (see CheckOut):
//   - FILE.npy: float32 [N, C, H, W] for images, clamped to [0, 1] as
//     torch_ref.py clamps its samples (NaN becomes 0, as in the PNGs);
//     [N, 2] for 2-D points, as sampled;
//   - a folder (path ending in "/" or an existing folder): images one PNG
//     each at native size, 000000.png, 000001.png, …;
//   - FILE.png: images as a grid;
//   - FILE.csv: 2-D points with the header x,y.
func Write(path string, rc config.Config, x []float32) error {
	if err := CheckOut(path, rc); err != nil {
		return err
	}
	shape := rc.Shape()
	dim := 1
	for _, d := range shape {
		dim *= d
	}
	if len(x)%dim != 0 {
		return fmt.Errorf("samples: %d values are not samples of shape %v", len(x), shape)
	}
	switch outKind(path) {
	case outNPY:
		if len(shape) == 3 {
			x = clamped(x)
		}
		return npy.WriteFile(path, append([]int{len(x) / dim}, shape...), x)
	case outFolder:
		return writeFolder(path, shape, x)
	case outPNG:
		return writeGrid(path, shape, x)
	}
	return plot.WriteCSV(path, x)
}

// WriteScatter draws 2-D samples written as CSV at csvPath as a scatter plot beside it
// (FILE.png, with the mixture's centres marked for gmm) and returns its path; other
// samples and outputs need none, and get "".
func WriteScatter(csvPath string, rc config.Config, x []float32, title string) (string, error) {
	if len(rc.Shape()) == 3 || strings.ToLower(filepath.Ext(csvPath)) != ".csv" {
		return "", nil
	}
	var centres [][]float64
	if g, err := rc.Data.GMM(); err == nil {
		for k := 0; k < g.Components(); k++ {
			centres = append(centres, g.Mean(k))
		}
	}
	img, err := plot.Scatter(x, -8, 8, title, centres)
	if err != nil {
		return "", err
	}
	png := strings.TrimSuffix(csvPath, filepath.Ext(csvPath)) + ".png"
	return png, plot.WritePNG(png, img)
}

// Output forms, chosen by the output path.
const (
	outNPY = iota
	outFolder
	outPNG
	outCSV
	outUnknown
)

func outKind(path string) int {
	if strings.HasSuffix(path, "/") || strings.HasSuffix(path, string(filepath.Separator)) || isDir(path) {
		return outFolder
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".npy":
		return outNPY
	case ".png":
		return outPNG
	case ".csv":
		return outCSV
	}
	return outUnknown
}

// CheckOut tells whether samples of run rc can be written at path, before
// any time is spent drawing them.
func CheckOut(path string, rc config.Config) error {
	shape := rc.Shape()
	images := len(shape) == 3
	if !images && (len(shape) != 1 || shape[0] != 2) {
		return fmt.Errorf("samples: cannot write samples of shape %v", shape)
	}
	switch k := outKind(path); {
	case k == outNPY:
	case images && (k == outPNG || k == outFolder):
	case !images && k == outCSV:
	case images:
		return fmt.Errorf("samples: out %s: %s images are written as FILE.png (a grid), FILE.npy or a folder DIR/ (one PNG each)", path, rc.Data.Name)
	default:
		return fmt.Errorf("samples: out %s: %s points are written as FILE.csv or FILE.npy", path, rc.Data.Name)
	}
	return nil
}

// writeGrid writes n images as a square grid, scaled up to about 64 pixels
// so that small images can be seen.
func writeGrid(path string, shape []int, x []float32) error {
	c, h, w := shape[0], shape[1], shape[2]
	n := len(x) / (c * h * w)
	cols := int(math.Ceil(math.Sqrt(float64(n))))
	img, err := plot.Grid(x, n, c, h, w, cols, max(2, 64/max(h, w)))
	if err != nil {
		return err
	}
	return plot.WritePNG(path, img)
}

// writeFolder writes each image as DIR/000000.png, … at native size.
func writeFolder(dir string, shape []int, x []float32) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	d := shape[0] * shape[1] * shape[2]
	for i := 0; i < len(x)/d; i++ {
		img, err := toImage(x[i*d:(i+1)*d], shape)
		if err != nil {
			return err
		}
		if err := plot.WritePNG(filepath.Join(dir, fmt.Sprintf("%06d.png", i)), img); err != nil {
			return err
		}
	}
	return nil
}

// clamped returns a copy of x with every value in [0, 1] (NaN as 0).
func clamped(x []float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		if !math.IsNaN(float64(v)) {
			out[i] = min(max(v, 0), 1)
		}
	}
	return out
}

// toImage converts one [C, H, W] image in [0, 1] (clamped) to 8 bits:
// grey for one channel, RGB for three.
func toImage(x []float32, shape []int) (image.Image, error) {
	c, h, w := shape[0], shape[1], shape[2]
	px := func(v float32) uint8 {
		if math.IsNaN(float64(v)) {
			return 0
		}
		return uint8(math.Round(float64(min(max(v, 0), 1)) * 255))
	}
	switch c {
	case 1:
		img := image.NewGray(image.Rect(0, 0, w, h))
		for i, v := range x[:h*w] {
			img.Pix[i] = px(v)
		}
		return img, nil
	case 3:
		img := image.NewNRGBA(image.Rect(0, 0, w, h))
		for y := 0; y < h; y++ {
			for xx := 0; xx < w; xx++ {
				p := y*w + xx
				img.SetNRGBA(xx, y, color.NRGBA{px(x[p]), px(x[h*w+p]), px(x[2*h*w+p]), 255})
			}
		}
		return img, nil
	}
	return nil, fmt.Errorf("samples: %d channels, want 1 or 3", c)
}

// DefaultName is the file name of the samples of a run: samples.png or samples.csv.
func DefaultName(rc config.Config) string {
	if len(rc.Shape()) == 3 {
		return "samples.png"
	}
	return "samples.csv"
}
