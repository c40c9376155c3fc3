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
	benchCommands["sample"] = benchSample
}

func benchSample(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench sample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	netName := fs.String("net", "", "mlp or unet (default: both, as shared/bench/torch_ref.py sample: mlp b5000, unet b64)")
	batch := fs.Int("batch", 0, "batch size (default 5000 for mlp, 64 for unet)")
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
	type work struct {
		net   string
		batch int
	}
	var todo []work
	switch *netName {
	case "":
		todo = []work{{"mlp", 5000}, {"unet", 64}}
	case "mlp", "unet":
		todo = []work{{*netName, map[string]int{"mlp": 5000, "unet": 64}[*netName]}}
	default:
		return usageError{fmt.Errorf("--net %q: want mlp or unet", *netName)}
	}
	enc := json.NewEncoder(stdout)
	summary := map[string]float64{}
	for _, w := range todo {
		if *batch > 0 {
			w.batch = *batch
		}
		shape, n := []int{2}, *iters*10
		if w.net == "unet" {
			shape, n = []int{1, 28, 28}, *iters
		}
		r, err := model.BenchSample(ctx, model.Config{Arch: w.net}, shape, w.batch, n)
		if err != nil {
			return err
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
		summary[fmt.Sprintf("%s_b%d_sample_steps_per_sec", r.Net, r.Batch)] = r.SampleStepsPerSec
	}
	return enc.Encode(map[string]any{"summary": summary})
}
