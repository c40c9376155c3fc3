package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/ncsn/ncsn/model"
)

func init() {
	benchCommands["sample"] = benchSample
}

func benchSample(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench sample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	netName := fs.String("net", "", "mlp or unet (default: both, as shared/bench/torch_ref.py sample: mlp b5000, unet b64)")
	batch := fs.Int("batch", 0, "batch size, with --net (default 5000 for mlp, 64 for unet)")
	iters := fs.Int("iters", 20, "timed Langevin steps (×10 for mlp, as torch_ref.py does)")
	threads := fs.Int("threads", 0, "GOMAXPROCS (default: all cores)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn bench sample [--net mlp|unet] [--batch B] [--iters N] [--threads T]\n\nTimes one annealed Langevin step (forward-only score + update) and prints one JSON line per workload.")
		printFlags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *threads > 0 {
		runtime.GOMAXPROCS(*threads)
	}
	todo, err := pickWork([]benchWork{{"mlp", 5000, *iters * 10}, {"unet", 64, *iters}}, *netName, *batch)
	if err != nil {
		return err
	}
	out := newBenchOut(stdout)
	for _, w := range todo {
		shape := []int{2}
		if w.net == "unet" {
			shape = []int{1, 28, 28}
		}
		r, err := model.BenchSample(ctx, model.Config{Arch: w.net}, shape, w.batch, w.iters)
		if err != nil {
			return err
		}
		if err := out.add(r, fmt.Sprintf("%s_b%d_sample_steps_per_sec", r.Net, r.Batch), r.SampleStepsPerSec); err != nil {
			return err
		}
	}
	return out.close()
}
