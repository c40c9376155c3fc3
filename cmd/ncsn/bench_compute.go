package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/ncsn/ncsn/model"
)

func init() {
	benchCommands["compute"] = benchCompute
}

func benchCompute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench compute", flag.ContinueOnError)
	fs.SetOutput(stderr)
	netName := fs.String("net", "", "mlp or unet (default: the three workloads of shared/bench/torch_ref.py: mlp b512, unet b64, unet b128)")
	batch := fs.Int("batch", 0, "batch size, with --net (default 512 for mlp, 64 for unet)")
	iters := fs.Int("iters", 10, "timed steps (×20 for mlp, as torch_ref.py does)")
	threads := fs.Int("threads", 0, "GOMAXPROCS (default: all cores)")
	layers := fs.Bool("layers", false, "time each convolution of the unet alone instead, forward and backward, with every algorithm (best of --iters runs): one JSON line per layer, pass and algorithm")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn bench compute [--net mlp|unet] [--batch B] [--iters N] [--threads T] [--layers]\n\nTimes one DSM training step (forward, backward, flat gradient) and prints one JSON line per workload.")
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *threads > 0 {
		runtime.GOMAXPROCS(*threads)
	}
	if *layers {
		if *netName == "mlp" {
			return usageError{fmt.Errorf("--layers: the mlp has no convolutions; use --net unet")}
		}
		b := *batch
		if b == 0 {
			b = 64
		}
		rs, err := model.BenchConvLayers(model.Config{Arch: "unet"}, []int{1, 28, 28}, b, *iters)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		for _, r := range rs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	todo, err := pickWork([]benchWork{{"mlp", 512, *iters * 20}, {"unet", 64, *iters}, {"unet", 128, *iters}}, *netName, *batch)
	if err != nil {
		return err
	}
	out := newBenchOut(stdout)
	for _, w := range todo {
		if err := ctx.Err(); err != nil {
			return err
		}
		shape := []int{2}
		if w.net == "unet" {
			shape = []int{1, 28, 28}
		}
		r, err := model.BenchStep(model.Config{Arch: w.net}, shape, w.batch, w.iters)
		if err != nil {
			return err
		}
		if err := out.add(r, fmt.Sprintf("%s_b%d_samples_per_sec", r.Net, r.Batch), r.SamplesPerSec); err != nil {
			return err
		}
	}
	return out.close()
}
