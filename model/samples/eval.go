package samples

import (
	"context"
	"fmt"
	"slices"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/keyrand"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// evalTag separates the held-out loss's noise from the seed's other uses;
// dequantTag its dequantization of the held-out images.
const (
	evalTag    = 0x686f6c64 // "hold"
	dequantTag = 0x64657175 // "dequ"
)

// Report is what `ncsn eval` measures.
type Report struct {
	Dataset string `json:"dataset"`
	Step    int64  `json:"step"`
	Weights string `json:"weights"` // ema or raw
	// Levels has one entry per σ level, largest σ first.
	Levels []LevelReport `json:"levels"`
	// Modes compares sampled mode weights with the truth (gmm only).
	Modes []ModeReport `json:"modes,omitempty"`
	// Samples is how many samples were drawn for the mode weights and Quality.
	Samples int `json:"samples,omitempty"`
	// Quality scores the samples against the held-out split.
	Quality *Quality `json:"quality,omitempty"`
}

// LevelReport holds one σ level's figures.
type LevelReport struct {
	Sigma float64 `json:"sigma"`
	// HeldOutLoss is the mean DSM loss ½‖σ·s(x+σz, σ) + z‖² on the held-out split.
	HeldOutLoss float64 `json:"held_out_loss"`
	// ScoreError is the σ²-weighted error against the analytic score (gmm only),
	// and ScoreErrorZero the same for a model that outputs zero.
	ScoreError     *float64 `json:"score_error,omitempty"`
	ScoreErrorZero *float64 `json:"score_error_zero,omitempty"`
}

// ModeReport is one mixture component's weight.
type ModeReport struct {
	Mean    []float64 `json:"mean"`
	Truth   float64   `json:"truth"`
	Sampled float64   `json:"sampled"`
}

// EvalOptions selects what to measure.
type EvalOptions struct {
	// HeldOut is the number of held-out examples per level (default 1000, capped at the split's size).
	HeldOut int
	// Samples is the number of samples drawn for gmm's mode weights and for
	// Reference's scores (0 skips both).
	Samples int
	Seed    uint64
	Sample  model.SampleConfig
	// Reference, when set, scores the samples (FID/KID for images, energy
	// distance for 2-D points); it must be of the run's data set.
	Reference *Reference
	// NNImage is where the nearest-neighbour PNG goes ("" for none).
	NNImage string
	// Progress reports sampling progress.
	Progress func(done, total int)
}

// Evaluate measures parameters params of the run rc.
func Evaluate(ctx context.Context, rc config.Config, params []float32, o EvalOptions) (*Report, error) {
	if o.HeldOut <= 0 {
		o.HeldOut = 1000
	}
	_, test, err := data.Open(rc.Data, rc.Run.Seed)
	if err != nil {
		return nil, err
	}
	if test == nil {
		return nil, fmt.Errorf("samples: %s has no held-out split in %s", rc.Data.Name, rc.Data.Path)
	}
	shape := rc.Shape()
	net, err := model.New(rc.Model, shape)
	if err != nil {
		return nil, err
	}
	copy(net.Params().Data, params)
	dim := data.Size(test)
	n := min(o.HeldOut, test.Len())
	batch := min(n, 256)
	if len(shape) == 1 {
		batch = n
	}
	sc, err := net.NewScorer(batch)
	if err != nil {
		return nil, err
	}
	defer sc.Close()
	x := heldOutPrepared(test, n, rc.Data, o.Seed)
	sigmas := rc.Noise.Sigmas()
	r := &Report{Dataset: rc.Data.Name}
	xb, out := make([]float32, batch*dim), make([]float32, batch*dim)
	z := make([]float32, batch*dim)
	sig := make([]float32, batch)
	var rng keyrand.Stream
	for i, s := range sigmas {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for j := range sig {
			sig[j] = float32(s)
		}
		var sum float64
		for lo := 0; lo < n; lo += batch {
			m := min(batch, n-lo)
			clear(xb)
			for b := 0; b < m; b++ {
				rng.Reset(o.Seed, evalTag, uint64(i), uint64(lo+b))
				for j := 0; j < dim; j++ {
					z[b*dim+j] = float32(rng.Norm())
					xb[b*dim+j] = x[(lo+b)*dim+j] + float32(s)*z[b*dim+j]
				}
			}
			if err := sc.Score(xb, sig, out); err != nil {
				return nil, err
			}
			for k := 0; k < m*dim; k++ {
				d := s*float64(out[k]) + float64(z[k])
				sum += 0.5 * d * d
			}
		}
		r.Levels = append(r.Levels, LevelReport{Sigma: s, HeldOutLoss: sum / float64(n)})
	}
	gmm := rc.Data.Name == data.NameGMM
	var g *data.GMM
	if gmm {
		if g, err = rc.Data.GMM(); err != nil {
			return nil, err
		}
		errs, err := model.ScoreErrors(sc, batch, dim, x, sigmas, g.Score, o.Seed)
		if err != nil {
			return nil, err
		}
		for i := range errs {
			e, z := errs[i].Error, errs[i].Baseline
			r.Levels[i].ScoreError, r.Levels[i].ScoreErrorZero = &e, &z
		}
	}
	if o.Samples == 0 || (!gmm && o.Reference == nil) {
		return r, nil
	}
	if o.Reference != nil && !slices.Equal(o.Reference.Shape(), shape) {
		return nil, fmt.Errorf("samples: reference of shape %v for a model of %v", o.Reference.Shape(), shape)
	}
	xs, err := Draw(ctx, rc, params, Options{N: o.Samples, Seed: o.Seed, Sample: o.Sample, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	r.Samples = o.Samples
	if o.Reference != nil {
		if r.Quality, err = o.Reference.Score(ctx, xs, o.NNImage); err != nil {
			return nil, err
		}
	}
	if !gmm {
		return r, nil
	}
	for k, w := range ModeWeights(g, xs[:o.Samples*g.Dim()]) {
		r.Modes = append(r.Modes, ModeReport{Mean: g.Mean(k), Truth: g.Weight(k), Sampled: w})
	}
	return r, nil
}

// ModeWeights is the fraction of the points x (n×g.Dim() values) nearest to
// each of the mixture's components.
func ModeWeights(g *data.GMM, x []float32) []float64 {
	d := g.Dim()
	w := make([]float64, g.Components())
	p := make([]float64, d)
	n := len(x) / d
	for i := 0; i < n; i++ {
		for j := range p {
			p[j] = float64(x[i*d+j])
		}
		w[g.Nearest(p)]++
	}
	for k := range w {
		w[k] /= float64(n)
	}
	return w
}

// heldOutPrepared is the first n examples of test as the network saw its
// training data (data.Config.Prepare: dequantized with streams keyed by
// (seed, example), centred when the run is). Raw multiples of 1/255 would put
// small-σ noise around exact pixel levels the network never saw, inflating
// the small-σ loss (about 3× on background pixels).
func heldOutPrepared(test data.Dataset, n int, dc data.Config, seed uint64) []float32 {
	dim := data.Size(test)
	x := make([]float32, n*dim)
	var rng keyrand.Stream
	for i := 0; i < n; i++ {
		xi := x[i*dim : (i+1)*dim]
		test.Example(i, xi)
		rng.Reset(seed, dequantTag, uint64(i))
		dc.Prepare(xi, &rng)
	}
	return x
}
