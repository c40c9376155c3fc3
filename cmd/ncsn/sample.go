package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/model/samples"
)

func init() {
	commands["sample"] = command{summary: "draw samples from a checkpoint (PNG grid, .npy or a folder of PNGs for images; CSV + scatter plot or .npy for 2-D), or inpaint images", run: runSample}
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
		checkpoint:    fs.String("checkpoint", "", "checkpoint file, or a run folder / checkpoints folder (newest that verifies)"),
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
	n := fs.Int("n", 0, "number of samples (default 64); with --inpaint, completions per image (default 4)")
	out := fs.String("out", "", "output: FILE.png (a grid of images), FILE.npy (float32 [N, C, H, W] in [0, 1], or [N, 2] for 2-D points), DIR/ (a folder, one PNG per image: 000000.png, …), FILE.csv for 2-D points (a scatter plot FILE.png is written beside it) (default samples.png / samples.csv, inpaint.png with --inpaint)")
	sampler := fs.String("sampler", "annealed", "annealed (annealed Langevin over all σ levels) or langevin (plain Langevin at the smallest σ)")
	initFrom := fs.String("init", samples.InitUniform, "where the chains start: uniform (U[0,1] for images) or data (held-out examples plus σ·z at the sampler's first σ, as NCSNv2)")
	inpaint := fs.String("inpaint", "", "complete the unknown pixels of images: FILE.npy ([N, C, H, W] in [0, 1]), FILE.png (one image of the dataset's size, or a grid as ncsn sample writes), a folder of PNGs, or test:I-J (held-out images I to J)")
	mask := fs.String("mask", "half", "with --inpaint, the known pixels: half (left half known, right half filled in), quarter (bottom-right quarter filled in), random (each pixel known with probability 1/2, from --seed), or FILE.png|FILE.npy (0 unknown, 1 known; H×W or C×H×W)")
	dataRoot := fs.String("data-root", "", "folder to resolve a relative data.path against (for --init data and --inpaint test:I-J)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn sample --checkpoint FILE|DIR [--n N] [--out FILE.png|FILE.npy|DIR/|FILE.csv] [--sampler annealed|langevin] [--init uniform|data] [--seed S] [--weights ema|raw]")
		fmt.Fprintln(stderr, "       ncsn sample --checkpoint FILE|DIR --inpaint FILE.npy|FILE.png|test:I-J [--mask half|quarter|random|FILE] [--n K] [--out FILE.png|FILE.npy|DIR/]")
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	switch {
	case *sampler != "annealed" && *sampler != "langevin":
		return usageError{fmt.Errorf("--sampler %q: want annealed or langevin", *sampler)}
	case *initFrom != samples.InitUniform && *initFrom != samples.InitData:
		return usageError{fmt.Errorf("--init %q: want uniform or data", *initFrom)}
	case set["n"] && *n < 1:
		return usageError{fmt.Errorf("--n %d: want >= 1", *n)}
	case *inpaint == "" && set["mask"]:
		return usageError{fmt.Errorf("--mask needs --inpaint: the images to complete")}
	case *inpaint != "" && *sampler != "annealed":
		return usageError{fmt.Errorf("--inpaint runs the annealed sampler; drop --sampler %s", *sampler)}
	}
	if !set["n"] {
		*n = 64
		if *inpaint != "" {
			*n = 4
		}
	}
	l, err := sf.load(stderr)
	if err != nil {
		return err
	}
	rc := withDataRoot(l.Config, *dataRoot)
	if *out == "" {
		*out = samples.DefaultName(rc)
		if *inpaint != "" {
			*out = "inpaint.png"
		}
	}
	if err := samples.CheckOut(*out, rc); err != nil {
		return usageError{err}
	}
	o := samples.Options{N: *n, Seed: *sf.seed, Sampler: *sampler, Init: *initFrom, Sample: rc.Sample}
	if *inpaint != "" {
		return runInpaint(ctx, l, rc, *inpaint, *mask, *n, *out, o, stdout, stderr)
	}
	o.Progress = progressBar(stderr, "sampling")
	x, err := samples.Draw(ctx, rc, l.Params, o)
	if err != nil {
		return err
	}
	if err := samples.Write(*out, rc, x); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "samples: %s\n", *out)
	png, err := samples.WriteScatter(*out, rc, x, fmt.Sprintf("%d %s samples (%s), step %d", *n, rc.Data.Name, *sampler, l.Checkpoint.Step))
	if err != nil || png == "" {
		return err
	}
	fmt.Fprintf(stdout, "scatter plot: %s\n", png)
	return nil
}

// runInpaint completes k times each image of src where mask says pixels are unknown.
func runInpaint(ctx context.Context, l *samples.Loaded, rc config.Config, src, mask string, k int, out string, o samples.Options, stdout, stderr io.Writer) error {
	images, n, err := samples.LoadImages(src, rc)
	if err != nil {
		return usageError{err}
	}
	known, err := samples.Mask(mask, rc, n, o.Seed)
	if err != nil {
		return usageError{err}
	}
	o.Progress = progressBar(stderr, "inpainting")
	x, err := samples.Inpaint(ctx, rc, l.Params, images, known, k, o)
	if err != nil {
		return err
	}
	if err := samples.WriteInpainting(out, rc, images, known, x, k); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "inpainting: %d images × %d completions: %s\n", n, k, out)
	return nil
}
