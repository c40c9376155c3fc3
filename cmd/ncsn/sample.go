package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/ncsn/ncsn/internal/plot"
	"github.com/ncsn/ncsn/internal/samples"
)

func init() {
	commands["sample"] = command{summary: "draw samples from a checkpoint (PNG grid for images, CSV + scatter plot for 2-D)", run: runSample}
	commands["eval"] = command{summary: "evaluate a checkpoint: per-σ held-out loss; for gmm, score error and mode weights", run: runEval}
}

// samplerFlags are the sampler settings shared by sample and eval; unset
// ones come from the run's sample section stored in the checkpoint.
type samplerFlags struct {
	fs            *flag.FlagSet
	checkpoint    *string
	weights       *string
	seed          *uint64
	stepsPerLevel *int
	eps           *float64
	denoise       *bool
}

func addSamplerFlags(fs *flag.FlagSet) *samplerFlags {
	return &samplerFlags{
		fs:            fs,
		checkpoint:    fs.String("checkpoint", "", "checkpoint file, or a run folder / checkpoints folder (newest that verifies) (required)"),
		weights:       fs.String("weights", "ema", "ema or raw: which parameters to use"),
		seed:          fs.Uint64("seed", 1, "sampler seed"),
		stepsPerLevel: fs.Int("steps-per-level", 0, "Langevin steps per σ level (default: the run's sample.steps_per_level)"),
		eps:           fs.Float64("eps", 0, "step size ε (default: the run's sample.eps)"),
		denoise:       fs.Bool("denoise", false, "final noise-free denoising step (default: the run's sample.denoise)"),
	}
}

// load opens the checkpoint and applies the overrides to the stored sample settings.
func (f *samplerFlags) load(stderr io.Writer) (*samples.Loaded, error) {
	if *f.checkpoint == "" {
		return nil, usageError{fmt.Errorf("--checkpoint is required")}
	}
	rc, c, path, err := samples.Open(*f.checkpoint)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if set["steps-per-level"] {
		rc.Sample.StepsPerLevel = *f.stepsPerLevel
	}
	if set["eps"] {
		rc.Sample.Eps = *f.eps
	}
	if set["denoise"] {
		rc.Sample.Denoise = *f.denoise
	}
	if err := rc.Sample.Validate(); err != nil {
		return nil, usageError{err}
	}
	params := c.Layout.Data
	switch *f.weights {
	case "ema":
		if c.EMA == nil {
			return nil, fmt.Errorf("%s has no EMA weights (train.ema was 0): use --weights raw", path)
		}
		params = c.EMA
	case "raw":
	default:
		return nil, usageError{fmt.Errorf("--weights %q: want ema or raw", *f.weights)}
	}
	fmt.Fprintf(stderr, "checkpoint %s: step %d, %s on %s, %s weights\n", path, c.Step, rc.Model.Arch, rc.Data.Name, *f.weights)
	return &samples.Loaded{Config: rc, Checkpoint: c, Path: path, Params: params}, nil
}

func runSample(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addSamplerFlags(fs)
	n := fs.Int("n", 64, "number of samples")
	out := fs.String("out", "", "output: FILE.png for images, FILE.csv for 2-D points (a scatter plot FILE.png is written beside it) (default samples.png / samples.csv)")
	sampler := fs.String("sampler", "annealed", "annealed (annealed Langevin over all σ levels) or langevin (plain Langevin at the smallest σ)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn sample --checkpoint FILE|DIR [--n N] [--out FILE.png|FILE.csv] [--sampler annealed|langevin] [--seed S] [--weights ema|raw]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sampler != "annealed" && *sampler != "langevin" {
		return usageError{fmt.Errorf("--sampler %q: want annealed or langevin", *sampler)}
	}
	l, err := sf.load(stderr)
	if err != nil {
		return err
	}
	rc := l.Config
	if *out == "" {
		*out = samples.DefaultName(rc)
	}
	image := len(rc.Shape()) == 3
	if ext := strings.ToLower(filepath.Ext(*out)); (image && ext != ".png") || (!image && ext != ".csv") {
		return usageError{fmt.Errorf("--out %s: %s samples are written as %s", *out, rc.Data.Name, map[bool]string{true: ".png", false: ".csv"}[image])}
	}
	x, err := samples.Draw(ctx, rc, l.Params, samples.Options{N: *n, Seed: *sf.seed, Sampler: *sampler, Sample: rc.Sample, Progress: progressBar(stderr, "sampling")})
	if err != nil {
		return err
	}
	if err := samples.Write(*out, rc, x); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "samples: %s\n", *out)
	if !image {
		var centres [][]float64
		if g, err := rc.Data.GMM(); err == nil {
			for k := 0; k < g.Components(); k++ {
				centres = append(centres, g.Mean(k))
			}
		}
		img, err := plot.Scatter(x, -8, 8, fmt.Sprintf("%d %s samples (%s), step %d", *n, rc.Data.Name, *sampler, l.Checkpoint.Step), centres)
		if err != nil {
			return err
		}
		png := strings.TrimSuffix(*out, filepath.Ext(*out)) + ".png"
		if err := plot.WritePNG(png, img); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "scatter plot: %s\n", png)
	}
	return nil
}

