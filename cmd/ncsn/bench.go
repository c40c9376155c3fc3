package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
)

// benchCommands holds the bench workloads (compute, allreduce, sample, train), one file each.
var benchCommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{}

func init() {
	commands["bench"] = command{
		summary: "benchmarks: bench compute|allreduce|sample|train [flags], JSON lines as in shared/bench/REFERENCE.md",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("want a workload: compute, allreduce, sample or train")}
			}
			if args[0] == "-h" || args[0] == "--help" {
				fmt.Fprintln(stderr, "usage: ncsn bench compute|allreduce|sample|train [flags]\n\nPrints one JSON line per measurement, with the fields of shared/bench/REFERENCE.md,\nto set beside torch_ref.py's. 'ncsn bench WORKLOAD -h' lists a workload's flags.")
				return flag.ErrHelp
			}
			f, ok := benchCommands[args[0]]
			if !ok {
				return usageError{fmt.Errorf("unknown workload %q: want compute, allreduce, sample or train", args[0])}
			}
			return f(ctx, args[1:], stdout, stderr)
		},
	}
}

// benchWork is one workload of bench compute or bench sample: a net at a batch size, timed
// over iters steps.
type benchWork struct {
	net          string
	batch, iters int
}

// pickWork returns the workloads of all (torch_ref.py's) that --net names: every one when net
// is "", else the first for that net, at --batch if given.
func pickWork(all []benchWork, net string, batch int) ([]benchWork, error) {
	if net == "" {
		if batch > 0 {
			return nil, usageError{fmt.Errorf("--batch goes with --net: the default workloads have batch sizes of their own")}
		}
		return all, nil
	}
	for _, w := range all {
		if w.net == net {
			if batch > 0 {
				w.batch = batch
			}
			return []benchWork{w}, nil
		}
	}
	return nil, usageError{fmt.Errorf("--net %q: want mlp or unet", net)}
}

// benchOut writes a workload's results as JSON lines, then a summary line of one figure
// from each, keyed as torch_ref.py keys its summary.
type benchOut struct {
	enc     *json.Encoder
	summary map[string]float64
}

func newBenchOut(w io.Writer) *benchOut {
	return &benchOut{enc: json.NewEncoder(w), summary: map[string]float64{}}
}

func (b *benchOut) add(result any, key string, figure float64) error {
	b.summary[key] = figure
	return b.enc.Encode(result)
}

func (b *benchOut) close() error { return b.enc.Encode(map[string]any{"summary": b.summary}) }
