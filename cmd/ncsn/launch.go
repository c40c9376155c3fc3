package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ncsn/ncsn/cmd/ncsn/internal/launch"
	"github.com/ncsn/ncsn/model/samples"
)

func init() {
	commands["launch"] = command{
		summary: "train on this host with a coordinator and N worker processes, then sample",
		run:     runLaunch,
	}
}

func runLaunch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("launch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workers := fs.Int("workers", 2, "number of worker processes")
	rcf := addRunConfigFlags(fs)
	out := fs.String("out", "ncsn-out", "output folder: checkpoints/, logs/, samples")
	metrics := fs.String("metrics", "", "serve the run's Prometheus metrics (the coordinator's) on this address")
	resume := fs.String("resume", "", resumeHelp)
	lf := addLogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn launch --workers N [--config FILE] [--set key=value]... [--out DIR] [--resume FILE|DIR]\n\nStarts a coordinator and N workers on localhost (free ports), trains run.steps steps,\nwrites DIR/checkpoints/*.safetensors, then samples. Each process logs to DIR/logs/.\nThe coordinator process draws the run.sample_every snapshots into DIR/snapshots.")
		printFlags(fs)
		fmt.Fprint(stderr, configDefaultsHelp)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if *workers < 1 {
		return usageError{fmt.Errorf("--workers %d: want >= 1", *workers)}
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	rc, done, err := rcf.loadRun(stdout, log)
	if err != nil || done {
		return err
	}
	if err := rc.WorkersFit(*workers); err != nil {
		return usageError{err}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	lock, err := lockRun(*out)
	if err != nil {
		return err
	}
	defer lock.Release()
	if *resume != "" {
		if err := startFrom(*resume, *out, &rc, log); err != nil {
			return err
		}
	}
	ckpts := filepath.Join(*out, "checkpoints")
	path := filepath.Join(*out, samples.DefaultName(rc))
	lc := launch.Config{
		CoordinatorArgs: metricsArgs(*metrics),
		Exe:             exe, Workers: *workers, Out: *out, RunConfig: rc.YAML(), ChildArgs: lf.args(), Logger: log,
		Follow: func(ctx context.Context, addr, secretFile string) {
			followProgress(ctx, addr, secretFile, rc.Train.GlobalBatch, stdout, 10*time.Second)
		},
	}
	if rc.Run.Samples > 0 {
		lc.SampleOutput = stderr
		lc.SampleArgs = []string{"--checkpoint", ckpts, "--n", fmt.Sprint(rc.Run.Samples), "--seed", fmt.Sprint(rc.Run.Seed), "--out", path}
	}
	l, err := launch.New(lc)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Fprintf(stdout, "output: %s (logs in %s)\n", *out, l.Logs())
	if err := l.Run(ctx); err != nil {
		if ctx.Err() != nil {
			// The coordinator checkpointed its last committed step before it exited.
			if _, c, _, oerr := samples.Open(ckpts); oerr == nil {
				return interrupted{c.Step}
			}
		}
		return err
	}
	fmt.Fprintf(stdout, "checkpoints: %s\nloss curve: %s\n", ckpts, filepath.Join(*out, "loss.png"))
	if rc.Run.Samples > 0 {
		fmt.Fprintf(stdout, "samples: %s\n", path)
	}
	return nil
}

func metricsArgs(addr string) []string {
	if addr == "" {
		return nil
	}
	return []string{"--metrics", addr}
}
