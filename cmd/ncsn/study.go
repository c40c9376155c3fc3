package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/ncsn/ncsn/cmd/ncsn/internal/study"
)

func init() {
	commands["study"] = command{
		summary: "toy studies on the 2-D mixture: study estimators [flags] prints a markdown table",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("want a study: estimators")}
			}
			if args[0] == "-h" || args[0] == "--help" {
				fmt.Fprintln(stderr, "usage: ncsn study estimators [flags]\n\n'ncsn study estimators -h' lists its flags.")
				return flag.ErrHelp
			}
			if args[0] != "estimators" {
				return usageError{fmt.Errorf("unknown study %q: want estimators", args[0])}
			}
			return runStudyEstimators(ctx, args[1:], stdout, stderr)
		},
	}
}

func runStudyEstimators(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("study estimators", flag.ContinueOnError)
	fs.SetOutput(stderr)
	steps := fs.Int64("steps", 0, "training steps of every estimator (default: the gmm's run.steps)")
	out := fs.String("out", "", "keep each estimator's run in DIR/<loss> and the table in DIR/estimators.md (default: a temporary folder, removed)")
	n := fs.Int("n", 2000, "Langevin samples behind each set of mode weights")
	heldOut := fs.Int("held-out", 1000, "held-out points per σ level for the score error")
	var sets setFlags
	fs.Var(&sets, "set", "override a config key of every run, e.g. --set train.n_particles=4 (repeatable; data.name stays gmm)")
	lf := addLogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn study estimators [--steps N] [--out DIR] [--n N] [--held-out N] [--set key=value]...\n\n"+
			"Trains every train.loss (dsm, ssm, ssm_vr, fd_ssm, esm) on the mixture 0.2·N((−5,−5), I) + 0.8·N((5,5), I)\n"+
			"for the same steps and prints a markdown table: seconds per step, score error per σ level against the\n"+
			"analytic score, annealed Langevin mode weights; then plain vs annealed Langevin from a uniform start.")
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageError{fmt.Errorf("unexpected arguments %v", fs.Args())}
	case *steps < 0:
		return usageError{fmt.Errorf("--steps %d: want >= 1 (or 0 for the default)", *steps)}
	case *n < 1:
		return usageError{fmt.Errorf("--n %d: want >= 1", *n)}
	case *heldOut < 1:
		return usageError{fmt.Errorf("--held-out %d: want >= 1", *heldOut)}
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	r, err := study.Estimators(ctx, study.EstimatorsConfig{Steps: *steps, Sets: sets, Out: *out, HeldOut: *heldOut, Samples: *n, Logger: log})
	if err != nil {
		return err
	}
	return r.Markdown(stdout)
}
