package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ncsn/ncsn/allreduce"
)

func init() {
	benchCommands["allreduce"] = benchAllreduce
}

// benchAllreduce runs the REFERENCE.md all-reduce workload over --procs processes. The parent
// re-executes this binary once per member with the hidden --member-* flags.
func benchAllreduce(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench allreduce", flag.ContinueOnError)
	fs.SetOutput(stderr)
	procs := fs.Int("procs", 4, "member processes")
	mib := fs.Float64("mib", 8, "buffer size in MiB")
	codec := fs.String("codec", "none", "quantisation: none, bf16, int8 or int4")
	compressor := fs.String("compressor", "none", "lossless stage: none, zstd or s2")
	chunk := fs.Int("chunk-bytes", allreduce.DefaultChunkBytes, "bytes of float32 input per pipelined piece")
	iters := fs.Int("iters", 20, "timed operations")
	warmup := fs.Int("warmup", 3, "untimed operations before")
	timeout := fs.Duration("timeout", time.Minute, "deadline of each operation")
	sameHost := fs.String("same-host", "unix", "how the members reach each other: unix sockets where the system allows (as workers on one host do), or tcp")
	rank := fs.Int("member-rank", -1, "internal: run as this member, listener on fd 3")
	addrs := fs.String("member-addrs", "", "internal: members' addresses, comma-separated")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn bench allreduce [--procs N] [--mib M] [--codec C] [--compressor Z] [--iters N] [--warmup N] [--same-host unix|tcp]\n\nTimes ring all-reduces (sum) of one float32 buffer across --procs processes on this\nmachine, over gRPC (on Unix sockets where the system allows, else TCP loopback), as\nshared/bench/torch_ref.py allreduce does with gloo over TCP loopback. \"socket\" in the\nresult tells which carried it.")
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return usageError{err}
	}
	c, err := allreduce.ParseCodec(*codec, *compressor)
	if err != nil {
		return usageError{err}
	}
	if *sameHost != "unix" && *sameHost != "tcp" {
		return usageError{fmt.Errorf("--same-host %q: want unix or tcp", *sameHost)}
	}
	cfg := allreduce.BenchConfig{
		Procs: *procs, Bytes: int(*mib*(1<<20)) / 4 * 4, Codec: c, ChunkBytes: *chunk,
		Iters: *iters, Warmup: *warmup, Timeout: *timeout, TCPOnly: *sameHost == "tcp",
	}
	var res allreduce.BenchResult
	if *rank >= 0 {
		lis, err := net.FileListener(os.NewFile(3, "listener"))
		if err != nil {
			return fmt.Errorf("member listener: %w", err)
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("rank", *rank)
		res, err = allreduce.BenchMember(ctx, cfg, *rank, strings.Split(*addrs, ","), lis, log)
		if err != nil {
			return err
		}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		res, err = allreduce.Bench(ctx, cfg, exe, append([]string{"bench", "allreduce"}, args...), stderr)
		if err != nil {
			return err
		}
	}
	return json.NewEncoder(stdout).Encode(res)
}
