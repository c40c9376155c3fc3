package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/samples"
)

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addSamplerFlags(fs)
	heldOut := fs.Int("held-out", 1000, "held-out examples per σ level")
	n := fs.Int("n", 5000, "samples drawn for the mode weights (gmm only; 0 skips)")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	dataRoot := fs.String("data-root", "", "folder to resolve a relative data.path against")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn eval --checkpoint FILE|DIR [--held-out N] [--n N] [--json]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := sf.load(stderr)
	if err != nil {
		return err
	}
	rc := l.Config
	if *dataRoot != "" && rc.Data.Path != "" && !filepath.IsAbs(rc.Data.Path) {
		rc.Data.Path = filepath.Join(*dataRoot, rc.Data.Path)
	}
	r, err := samples.Evaluate(ctx, rc, l.Params, samples.EvalOptions{HeldOut: *heldOut, Samples: *n, Seed: *sf.seed, Sample: rc.Sample, Progress: progressBar(stderr, "sampling")})
	if err != nil {
		return err
	}
	r.Step, r.Weights = l.Checkpoint.Step, *sf.weights
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	fmt.Fprintf(stdout, "%s, step %d, %s weights\n\n%10s  %14s", r.Dataset, r.Step, r.Weights, "sigma", "held-out loss")
	gmm := rc.Data.Name == data.NameGMM
	if gmm {
		fmt.Fprintf(stdout, "  %12s  %12s", "score error", "(zero model)")
	}
	fmt.Fprintln(stdout)
	for _, lv := range r.Levels {
		fmt.Fprintf(stdout, "%10.4g  %14.5g", lv.Sigma, lv.HeldOutLoss)
		if lv.ScoreError != nil {
			fmt.Fprintf(stdout, "  %12.5g  %12.5g", *lv.ScoreError, *lv.ScoreErrorZero)
		}
		fmt.Fprintln(stdout)
	}
	if len(r.Modes) > 0 {
		fmt.Fprintf(stdout, "\nmode weights from %d annealed Langevin samples:\n", r.Samples)
		for _, m := range r.Modes {
			fmt.Fprintf(stdout, "  mean %v: sampled %.4f, truth %.4f\n", m.Mean, m.Sampled, m.Truth)
		}
	}
	return nil
}
