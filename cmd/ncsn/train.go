package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/ncsn/ncsn/model/samples"
	"github.com/ncsn/ncsn/worker"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	commands["train"] = command{
		summary: "train in this one process (no cluster), then draw samples",
		run:     runTrain,
	}
}

func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rcf := addRunConfigFlags(fs)
	out := fs.String("out", "ncsn-out", "output folder: checkpoints/, samples; an existing run there is resumed")
	resume := fs.String("resume", "", resumeHelp)
	metrics := fs.String("metrics", "", "serve Prometheus metrics on this address")
	lf := addLogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn train [--config FILE] [--set key=value]... [--out DIR] [--resume FILE|DIR]\n\nTrains in one process, checkpointing to DIR/checkpoints, then draws run.samples samples with the EMA weights.\nEvery run.sample_every steps a goroutine of this process draws run.snapshot_samples samples into DIR/snapshots.")
		printFlags(fs)
		fmt.Fprint(stderr, configDefaultsHelp)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return usageError{err}
	}
	rc, done, err := rcf.loadRun(stdout, log)
	if err != nil || done {
		return err
	}
	run, err := openRunFolder(*out, *resume, &rc, log)
	if err != nil {
		return err
	}
	defer run.close()
	line := stepLine(stderr, rc.Train.GlobalBatch)
	onStep := func(s worker.StepInfo) {
		line(s)
		run.record(s.Step, s.Loss, s.PerLevel)
	}
	reg := prometheus.NewRegistry()
	lc := worker.LocalConfig{Run: rc, Out: *out, Logger: log, OnStep: onStep, Registerer: reg}
	wait, err := serveMetrics(ctx, *metrics, reg, log)
	if err != nil {
		return err
	}
	defer wait()
	snaps, err := startSnapshots(ctx, rc, *out, log, nil)
	if err != nil {
		return err
	}
	defer snaps.stop()
	if snaps != nil {
		lc.Snapshots = snaps.s
	}
	l, err := worker.NewLocal(lc)
	if err != nil {
		return err
	}
	defer l.Close()
	log.Info("training", "data", rc.Data.Name, "model", rc.Model.Arch, "params", len(l.Net().Params().Data), "steps", rc.Run.Steps, "global_batch", rc.Train.GlobalBatch, "out", *out)
	if err := l.Run(ctx); err != nil {
		if ctx.Err() != nil && err == ctx.Err() {
			// Run has checkpointed it (a failed checkpoint comes joined to ctx's error).
			return interrupted{l.State().Step()}
		}
		return err
	}
	if err := snaps.stop(); err != nil {
		return err
	}
	curve, err := run.finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "loss curve: %s\n", curve)
	if rc.Run.Samples == 0 {
		return nil
	}
	params := l.State().SampleWeights()
	log.Info("sampling", "n", rc.Run.Samples, "sampler", "annealed", "steps_per_level", rc.Sample.StepsPerLevel)
	x, err := samples.Draw(ctx, rc, params, samples.Options{N: rc.Run.Samples, Seed: rc.Run.Seed, Sample: rc.Sample, Progress: progressBar(stderr, "sampling")})
	if err != nil {
		return err
	}
	path := filepath.Join(*out, samples.DefaultName(rc))
	if err := samples.Write(path, rc, x); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "samples: %s\ncheckpoints: %s\n", path, filepath.Join(*out, "checkpoints"))
	png, err := samples.WriteScatter(path, rc, x, fmt.Sprintf("%d %s samples, step %d", rc.Run.Samples, rc.Data.Name, rc.Run.Steps))
	if err != nil || png == "" {
		return err
	}
	fmt.Fprintf(stdout, "scatter plot: %s\n", png)
	return nil
}
