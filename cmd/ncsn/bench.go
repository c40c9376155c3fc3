package main

import (
	"context"
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
