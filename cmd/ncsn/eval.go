package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/imageset"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/model/samples"
)

const evalHelp = `
Without --samples, eval measures a checkpoint: the DSM loss per σ level on the
held-out split, then draws --n samples and scores them. With --samples it
scores images from anywhere (e.g. torch_ref.py's .npy) against the data set.

Images are scored by FID and KID against the test split, in the feature space
of a small classifier ncsn trains on the data set's training split on first
use (a few CPU minutes; cached, keyed by the data and the training recipe;
--train-features trains it alone). These FIDs and KIDs compare only with each
other, never with published FIDs, which use Inception weights. Beside each
score is its floor: the same score of N real training images, what a perfect
model reaches with N samples. A nearest-neighbour check (the samples' mean L2
distance to their nearest training image against that of held-out real images)
shows memorisation; a PNG shows samples beside their nearest training images.
2-D toys are scored by the energy distance to the test split, beside its floor.
`

func init() {
	commands["eval"] = command{summary: "score a checkpoint or any images: per-σ held-out loss, FID/KID and nearest neighbours (images), energy distance (toys)", run: runEval}
}

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addSamplerFlags(fs)
	heldOut := fs.Int("held-out", 1000, "held-out examples per σ level")
	n := fs.Int("n", 0, "samples drawn and scored, also for gmm's mode weights; 0 skips them (default 1000 for images, 5000 for 2-D toys)")
	all := fs.Bool("all", false, "score every checkpoint of the --checkpoint folder, oldest first, and write eval.csv and eval.png")
	samplesPath := fs.String("samples", "", "score these samples instead: FILE.npy ([N,C,H,W] in [0,1], or [N,2] points), GRID.png (as ncsn sample and torch_ref.py write) or a folder of PNGs; needs --data")
	dataName := fs.String("data", "", "the data set of --samples and --train-features: "+strings.Join(data.Names, ", "))
	dataPath := fs.String("data-path", "", "folder of --data's files (default: the data set's own, e.g. Debian's Fashion-MNIST)")
	trainFeatures := fs.Bool("train-features", false, "train the feature network of --data (or find it in the cache), print its test accuracy and exit")
	cache := fs.String("feature-cache", "", "folder of trained feature networks (default $"+samples.CacheEnv+", else ncsn/ in $XDG_CACHE_HOME or ~/.cache)")
	featureEpochs := fs.Int("feature-epochs", samples.DefaultFeatureRecipe().Epochs, "epochs of the feature network's training (part of its cache key)")
	featureExamples := fs.Int("feature-examples", 0, "training examples of the feature network, 0 for all (part of its cache key)")
	neighbours := fs.Int("neighbours", samples.DefaultNeighbours, "samples shown beside their nearest training images in the nearest-neighbour PNG (0: no PNG)")
	out := fs.String("out", "", "folder for eval's files: the nearest-neighbour PNG, and with --all eval.csv and eval.png (default: beside the checkpoints or the samples)")
	asJSON := fs.Bool("json", false, "print the report as one JSON object (with --all, one per checkpoint)")
	dataRoot := fs.String("data-root", "", "folder to resolve a relative data.path against")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: ncsn eval --checkpoint FILE|DIR [--all] [--n N] [--held-out N] [--json] [--out DIR]
       ncsn eval --samples FILE.npy|GRID.png|DIR --data NAME [--data-path DIR] [--json] [--out DIR]
       ncsn eval --train-features --data NAME [--data-path DIR]`)
		printFlags(fs)
		fmt.Fprint(stderr, evalHelp)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case *trainFeatures && (*samplesPath != "" || *sf.checkpoint != ""):
		return usageError{fmt.Errorf("--train-features takes --data, not --samples or --checkpoint")}
	case *samplesPath != "" && *sf.checkpoint != "":
		return usageError{fmt.Errorf("give --samples or --checkpoint, not both")}
	case (*samplesPath != "" || *trainFeatures) && *dataName == "":
		return usageError{fmt.Errorf("--data is required with --samples and --train-features (one of %s)", strings.Join(data.Names, ", "))}
	case *dataName != "" && *samplesPath == "" && !*trainFeatures:
		return usageError{fmt.Errorf("--data goes with --samples or --train-features; a checkpoint knows its data set")}
	case *all && *sf.checkpoint == "":
		return usageError{fmt.Errorf("--all scores the checkpoints of --checkpoint DIR")}
	case *n < 0 || *heldOut < 0 || *neighbours < 0:
		return usageError{fmt.Errorf("--n, --held-out and --neighbours must be >= 0")}
	}
	recipe := samples.DefaultFeatureRecipe()
	recipe.Epochs, recipe.Examples = *featureEpochs, *featureExamples
	if err := recipe.Validate(); err != nil {
		return usageError{err}
	}
	dir, err := samples.CacheDir(*cache)
	if err != nil {
		return err
	}
	ro := samples.ReferenceOptions{Seed: *sf.seed, Neighbours: *neighbours, Features: samples.FeatureOptions{
		CacheDir: dir, Recipe: recipe, Logger: slog.New(slog.NewTextHandler(stderr, nil)), Progress: featureProgress(stderr, dir)}}

	if *dataName != "" {
		dc := data.Config{Name: *dataName, Path: *dataPath}
		seed := config.Default(*dataName).Run.Seed
		if *trainFeatures {
			return runTrainFeatures(ctx, dc, seed, ro.Features, stdout)
		}
		ref, err := samples.NewReference(ctx, dc, seed, ro)
		if err != nil {
			return err
		}
		defer ref.Close()
		x, err := imageset.Read(*samplesPath, ref.Shape())
		if err != nil {
			return err
		}
		nn := ""
		if *neighbours > 0 && len(ref.Shape()) == 3 {
			nn = filepath.Join(outDir(*out, *samplesPath), strings.TrimSuffix(filepath.Base(*samplesPath), filepath.Ext(*samplesPath))+"-nn.png")
		}
		q, err := ref.Score(ctx, x, nn)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(q)
		}
		fmt.Fprintf(stdout, "%s: %d samples of %s\n", *samplesPath, q.N, *dataName)
		printQuality(stdout, q)
		return nil
	}

	if *all {
		paths, err := samples.Checkpoints(*sf.checkpoint)
		if err != nil {
			return err
		}
		return runSweep(ctx, paths, sf, ro, sweepOptions{heldOut: *heldOut, n: *n, nSet: set["n"], json: *asJSON, dataRoot: *dataRoot,
			out: outDir(*out, paths[0])}, stdout, stderr)
	}
	l, err := sf.load(stderr)
	if err != nil {
		return err
	}
	rc := withDataRoot(l.Config, *dataRoot)
	eo, ref, err := evalOptions(ctx, rc, *heldOut, *n, set["n"], *sf.seed, ro)
	if err != nil {
		return err
	}
	if ref != nil {
		defer ref.Close()
		if *neighbours > 0 && len(ref.Shape()) == 3 {
			eo.NNImage = filepath.Join(outDir(*out, l.Path), fmt.Sprintf("nn-%d.png", l.Checkpoint.Step))
		}
	}
	eo.Progress = progressBar(stderr, "sampling")
	r, err := samples.Evaluate(ctx, rc, l.Params, eo)
	if err != nil {
		return err
	}
	r.Step, r.Weights = l.Checkpoint.Step, *sf.weights
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	printReport(stdout, r)
	return nil
}

// withDataRoot resolves a relative data.path against root.
func withDataRoot(rc config.Config, root string) config.Config {
	if root != "" && rc.Data.Path != "" && !filepath.IsAbs(rc.Data.Path) {
		rc.Data.Path = filepath.Join(root, rc.Data.Path)
	}
	return rc
}

// evalOptions are the checkpoint evaluation's settings: n samples (when
// unset, 1000 for images and 5000 for 2-D points), scored against the run's
// whole data set when there are any.
func evalOptions(ctx context.Context, rc config.Config, heldOut, n int, nSet bool, seed uint64, ro samples.ReferenceOptions) (samples.EvalOptions, *samples.Reference, error) {
	image := len(rc.Shape()) == 3
	if !nSet {
		n = 5000
		if image {
			n = 1000
		}
	}
	eo := samples.EvalOptions{HeldOut: heldOut, Samples: n, Seed: seed, Sample: rc.Sample}
	if n == 0 {
		return eo, nil, nil
	}
	ref, err := samples.NewReference(ctx, samples.FullData(rc.Data), rc.Run.Seed, ro)
	if err != nil {
		return eo, nil, err
	}
	eo.Reference = ref
	return eo, ref, nil
}

// outDir is where eval writes its files: out if set, else beside path (for a
// folder of PNGs, beside the folder, so that the next read does not take
// eval's PNG for a sample).
func outDir(out, path string) string {
	if out != "" {
		return out
	}
	return filepath.Dir(filepath.Clean(path))
}

type sweepOptions struct {
	heldOut, n int
	nSet, json bool
	dataRoot   string
	out        string
}

func runSweep(ctx context.Context, paths []string, sf *samplerFlags, ro samples.ReferenceOptions, so sweepOptions, stdout, stderr io.Writer) error {
	// The first checkpoint fixes the data set, and so the reference.
	rc, _, _, err := samples.Open(paths[0])
	if err != nil {
		return err
	}
	eo, ref, err := evalOptions(ctx, withDataRoot(rc, so.dataRoot), so.heldOut, so.n, so.nSet, *sf.seed, ro)
	if err != nil {
		return err
	}
	if ref != nil {
		defer ref.Close()
	}
	var bar func(done, total int)
	eo.Progress = func(done, total int) {
		if done == 1 {
			bar = progressBar(stderr, "sampling")
		}
		bar(done, total)
	}
	load := func(path string) (*samples.Loaded, error) {
		*sf.checkpoint = path
		l, err := sf.load(stderr)
		if err != nil {
			return nil, err
		}
		l.Config = withDataRoot(l.Config, so.dataRoot)
		return l, nil
	}
	reports, err := samples.Sweep(ctx, paths, load, eo, func(r *samples.Report) error {
		r.Weights = *sf.weights
		if so.json {
			return json.NewEncoder(stdout).Encode(r)
		}
		fmt.Fprintf(stdout, "step %d:", r.Step)
		switch q := r.Quality; {
		case q != nil && q.Images != nil:
			i := q.Images
			fmt.Fprintf(stdout, " FID %.4g (floor %.4g), KID %.4g ± %.2g (floor %.4g), nearest training image %.4g (real %.4g),",
				i.FID, i.FloorFID, i.KID, i.KIDStd, i.FloorKID, i.NNDistance, i.NNDistanceReal)
		case q != nil:
			fmt.Fprintf(stdout, " energy distance %.5g (floor %.5g),", q.Points.Energy, q.Points.FloorEnergy)
		}
		fmt.Fprintf(stdout, " mean held-out loss %.5g\n", r.MeanHeldOutLoss())
		return nil
	})
	if len(reports) > 0 {
		csv, png, werr := samples.WriteSweep(so.out, reports)
		if werr != nil && err == nil {
			err = werr
		}
		if werr == nil {
			w := stdout
			if so.json {
				w = stderr // stdout holds JSON lines only
			}
			fmt.Fprintf(w, "table: %s\nplot: %s\n", csv, png)
		}
	}
	return err
}

// featureProgress announces the feature network's training on its first
// step, then draws a progress bar.
func featureProgress(w io.Writer, dir string) func(done, total int) {
	var bar func(done, total int)
	return func(done, total int) {
		if bar == nil {
			fmt.Fprintf(w, "training the feature network for FID/KID (once; cached in %s)\n", dir)
			bar = progressBar(w, "feature network")
		}
		bar(done, total)
	}
}

func runTrainFeatures(ctx context.Context, dc data.Config, seed uint64, fo samples.FeatureOptions, stdout io.Writer) error {
	train, test, err := data.Open(dc, seed)
	if err != nil {
		return err
	}
	if test == nil {
		return fmt.Errorf("%s has no test split in %s: the feature network's accuracy is measured on it", dc.Name, dc.Path)
	}
	f, err := samples.LoadFeatures(ctx, dc.Name, train, test, fo)
	if err != nil {
		return err
	}
	defer f.Close()
	how := "found in the cache"
	if f.Trained {
		how = fmt.Sprintf("trained in %s", f.TrainTime.Round(1e9))
	}
	fmt.Fprintf(stdout, "feature network of %s: %s (%s), test accuracy %.2f%%\n", dc.Name, f.Path, how, 100*f.Accuracy)
	return nil
}

func printReport(w io.Writer, r *samples.Report) {
	fmt.Fprintf(w, "%s, step %d, %s weights\n\n%10s  %14s", r.Dataset, r.Step, r.Weights, "sigma", "held-out loss")
	gmm := r.Dataset == data.NameGMM
	if gmm {
		fmt.Fprintf(w, "  %12s  %12s", "score error", "(zero model)")
	}
	fmt.Fprintln(w)
	for _, lv := range r.Levels {
		fmt.Fprintf(w, "%10.4g  %14.5g", lv.Sigma, lv.HeldOutLoss)
		if lv.ScoreError != nil {
			fmt.Fprintf(w, "  %12.5g  %12.5g", *lv.ScoreError, *lv.ScoreErrorZero)
		}
		fmt.Fprintln(w)
	}
	if len(r.Modes) > 0 {
		fmt.Fprintf(w, "\nmode weights from %d annealed Langevin samples:\n", r.Samples)
		for _, m := range r.Modes {
			fmt.Fprintf(w, "  mean %v: sampled %.4f, truth %.4f\n", m.Mean, m.Sampled, m.Truth)
		}
	}
	if r.Quality != nil {
		fmt.Fprintf(w, "\n%d annealed Langevin samples:\n", r.Samples)
		printQuality(w, r.Quality)
	}
}

func printQuality(w io.Writer, q *samples.Quality) {
	if p := q.Points; p != nil {
		fmt.Fprintf(w, "  energy distance to the %d test points: %.5g (floor, %d training points: %.5g)\n", q.Reference, p.Energy, q.N, p.FloorEnergy)
		return
	}
	i := q.Images
	fmt.Fprintf(w, "  scored against %d test images in the features of ncsn's own classifier (test accuracy %.2f%%;\n", q.Reference, 100*i.ClassifierAccuracy)
	fmt.Fprintf(w, "  these scores compare only with other ncsn scores, not with published Inception FIDs)\n")
	fmt.Fprintf(w, "  %-5s %22s  %22s\n", "", "samples", fmt.Sprintf("floor (%d real)", q.N))
	fmt.Fprintf(w, "  %-5s %22.4g  %22.4g\n", "FID", i.FID, i.FloorFID)
	fmt.Fprintf(w, "  %-5s %22s  %22s\n", "KID", fmt.Sprintf("%.3g ± %.2g", i.KID, i.KIDStd), fmt.Sprintf("%.3g ± %.2g", i.FloorKID, i.FloorKIDStd))
	fmt.Fprintf(w, "  nearest training image (mean L2 over %d): samples %.4f, held-out real images %.4f\n", i.NNCount, i.NNDistance, i.NNDistanceReal)
	if i.NNImage != "" {
		fmt.Fprintf(w, "  samples beside their nearest training images: %s\n", i.NNImage)
	}
	fmt.Fprintf(w, "  feature network: %s\n", i.Classifier)
}
