package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/worker"
)

func init() {
	benchCommands["train"] = benchTrain
}

// torchTrainRecipe is shared/bench/torch_ref.py train's recipe as run config
// keys: Fashion-MNIST dequantized, DSM over 10 geometric σ from 1 to 0.01,
// Adam at 1e-3, EMA 0.999. The sampler keys only make the config complete.
var torchTrainRecipe = []string{
	"data.name=fashion-mnist", "data.dequantize=true", "data.flip=false", "data.centered=false",
	"noise.sigma_max=1", "noise.sigma_min=0.01", "noise.levels=10",
	"train.loss=dsm", "train.anneal_power=2", "train.lr=1e-3", "train.beta1=0.9", "train.beta2=0.999",
	"train.eps=1e-8", "train.clip_norm=0", "train.ema=0.999",
	"sample.steps_per_level=100", "sample.eps=2e-5",
}

func benchTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	width := fs.Int("width", 0, "U-Net channels W, 2W, 4W (default: 16, then the reference 32)")
	batch := fs.Int("batch", 64, "batch size")
	steps := fs.Int("steps", 50, "timed steps")
	warmup := fs.Int("warmup", 2, "untimed steps before")
	threads := fs.Int("threads", 0, "GOMAXPROCS (default: all cores)")
	var sets setFlags
	fs.Var(&sets, "set", "override a run config key after the recipe, e.g. --set data.path=DIR (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: ncsn bench train [--width W] [--batch B] [--steps N] [--warmup N] [--threads T] [--set key=value]...

Times whole training steps (data, noise, forward and backward, Adam, EMA) of
shared/bench/torch_ref.py train's recipe and prints one JSON line per width;
compare with torch_ref.py train --width W --batch B --steps N --n 0.`)
		printFlags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *threads > 0 {
		runtime.GOMAXPROCS(*threads)
	}
	widths := []int{16, 32}
	if *width > 0 {
		widths = []int{*width}
	}
	out := newBenchOut(stdout)
	for _, w := range widths {
		kv := append(append([]string{}, torchTrainRecipe...),
			fmt.Sprintf("model.channels=[%d,%d,%d]", w, 2*w, 4*w),
			fmt.Sprintf("train.global_batch=%d", *batch),
			fmt.Sprintf("run.steps=%d", *steps))
		rc, err := config.Load("", append(kv, sets...))
		if err != nil {
			return usageError{err}
		}
		if err := rc.Validate(); err != nil {
			return usageError{err}
		}
		r, err := worker.BenchTrain(ctx, rc, *warmup)
		if err != nil {
			return err
		}
		if err := out.add(r, fmt.Sprintf("w%d_b%d_samples_per_sec", r.Width, r.Batch), r.SamplesPerSec); err != nil {
			return err
		}
	}
	return out.close()
}
