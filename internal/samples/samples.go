// Package samples draws samples from a trained score network and writes
// them where a person looks: a PNG grid for images, CSV (and a scatter
// plot) for 2-D points.
package samples

import (
	"context"
	"fmt"
	"math"

	"github.com/ncsn/ncsn/internal/config"
	"github.com/ncsn/ncsn/internal/plot"
	"github.com/ncsn/ncsn/model"
)

// Options selects the sampler and its settings.
type Options struct {
	N       int
	Seed    uint64
	Sampler string // "annealed" (default) or "langevin"
	Sample  model.SampleConfig
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
	switch o.Sampler {
	case "", "annealed":
		err = s.Annealed(ctx, x, sigmas, o.Sample)
	case "langevin":
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

// Write stores samples at path: a PNG grid for images (path ending .png),
// CSV with header x,y for 2-D points (path ending .csv).
func Write(path string, rc config.Config, x []float32) error {
	shape := rc.Shape()
	if len(shape) == 3 {
		c, h, w := shape[0], shape[1], shape[2]
		n := len(x) / (c * h * w)
		cols := int(math.Ceil(math.Sqrt(float64(n))))
		// Scale small images up to about 64 pixels so they can be seen.
		img, err := plot.Grid(x, n, c, h, w, cols, max(2, 64/max(h, w)))
		if err != nil {
			return err
		}
		return plot.WritePNG(path, img)
	}
	if len(shape) != 1 || shape[0] != 2 {
		return fmt.Errorf("samples: cannot write samples of shape %v", shape)
	}
	return plot.WriteCSV(path, x)
}

// DefaultName is the file name of the samples of a run: samples.png or samples.csv.
func DefaultName(rc config.Config) string {
	if len(rc.Shape()) == 3 {
		return "samples.png"
	}
	return "samples.csv"
}
