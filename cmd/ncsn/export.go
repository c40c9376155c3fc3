package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/ncsn/ncsn/model"
)

func init() {
	commands["export"] = command{summary: "write a checkpoint's weights alone (EMA or raw) as safetensors, named as PyTorch's state_dict", run: runExport}
}

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addSamplerFlags(fs)
	out := fs.String("out", "model.safetensors", "the weights file to write")
	list := fs.Bool("list", false, "also print each tensor's name and shape")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn export --checkpoint FILE|DIR [--weights ema|raw] [--out FILE.safetensors] [--list]\n\n"+
			"Writes the parameters alone, one float32 tensor per parameter named as the network's\n"+
			"parameters are (for the U-Net and MLP, the state_dict names of shared/bench/torch_ref.py's\n"+
			"UNet and MLP), with the step, the run config and the source in the metadata.\n"+
			"docs/export.md loads them into PyTorch.")
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	for _, name := range []string{"seed", "steps-per-level", "eps", "denoise"} {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
		if set {
			return usageError{fmt.Errorf("--%s: a sampler flag, not used by export", name)}
		}
	}
	l, err := sf.load(stderr)
	if err != nil {
		return err
	}
	c := l.Checkpoint
	meta := map[string]string{model.MetaWeights: *sf.weights, model.MetaSource: l.Path}
	if v, ok := c.Meta[model.MetaConfig]; ok {
		meta[model.MetaConfig] = v
	}
	if err := model.WriteWeights(*out, c.Layout, l.Params, c.Step, meta); err != nil {
		return err
	}
	if *list {
		for i, name := range c.Layout.Names {
			fmt.Fprintf(stdout, "%-16s %v\n", name, c.Layout.Shapes[i])
		}
	}
	fmt.Fprintf(stdout, "weights: %s (%d tensors, %d parameters, %s, step %d)\n", *out, len(c.Layout.Names), len(l.Params), *sf.weights, c.Step)
	return nil
}
