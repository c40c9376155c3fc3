package allreduce

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BenchConfig is the all-reduce workload of shared/bench/REFERENCE.md: Procs processes over
// loopback, one float32 buffer of Bytes, Iters timed operations after Warmup.
type BenchConfig struct {
	Procs      int
	Bytes      int
	Codec      Codec
	ChunkBytes int
	Iters      int
	Warmup     int
	Timeout    time.Duration
	// TCPOnly keeps the members on TCP loopback (Config.TCPOnly).
	TCPOnly bool
}

func (c *BenchConfig) validate() error {
	switch {
	case c.Procs < 1 || c.Procs > 64:
		return fmt.Errorf("allreduce: bench: %d procs, want 1…64", c.Procs)
	case c.Bytes < 4 || c.Bytes%4 != 0:
		return fmt.Errorf("allreduce: bench: %d bytes is not a positive number of float32", c.Bytes)
	case c.Iters < 1 || c.Warmup < 0:
		return fmt.Errorf("allreduce: bench: iters %d, warmup %d", c.Iters, c.Warmup)
	}
	if c.Timeout == 0 {
		c.Timeout = time.Minute
	}
	return c.Codec.validate()
}

// BenchResult is one JSON line: the fields of REFERENCE.md, the codec, and the bytes this
// member put on the wire per operation.
type BenchResult struct {
	Peer           string  `json:"peer"`
	Procs          int     `json:"procs"`
	Bytes          int     `json:"bytes"`
	SecPerOp       float64 `json:"sec_per_op"`
	AlgbwGBps      float64 `json:"algbw_gbps"`
	BusbwGBps      float64 `json:"busbw_gbps"`
	Codec          string  `json:"codec"`
	Compressor     string  `json:"compressor"`
	ChunkBytes     int     `json:"chunk_bytes"`
	WireBytesPerOp int64   `json:"wire_bytes_per_op"`
	// MaxRelError is the largest difference from the float64 sum, relative to the largest
	// magnitude of that sum (float32 rounding alone for codec none).
	MaxRelError float64 `json:"max_rel_error"`
	// GOMAXPROCS of each member process.
	GoMaxProcs int `json:"gomaxprocs"`
	// Socket carried the streams to the right-hand neighbour: tcp or unix ("" with one member).
	Socket string `json:"socket"`
}

// Bench runs the workload across cfg.Procs processes started as exe args... plus the member
// flags --member-rank R --member-addrs A,B,... (parsed by the caller, which then calls
// BenchMember with the listener inherited as file descriptor 3). It returns rank 0's result.
func Bench(ctx context.Context, cfg BenchConfig, exe string, args []string, stderr io.Writer) (BenchResult, error) {
	if err := cfg.validate(); err != nil {
		return BenchResult{}, err
	}
	if _, ok := stderr.(*os.File); !ok {
		// exec copies a non-file writer from each member on a goroutine of its own.
		stderr = &lockedWriter{w: stderr}
	}
	files := make([]*os.File, cfg.Procs)
	addrs := make([]string, cfg.Procs)
	for i := range files {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return BenchResult{}, fmt.Errorf("allreduce: bench: listen: %w", err)
		}
		f, err := lis.(*net.TCPListener).File()
		lis.Close()
		if err != nil {
			return BenchResult{}, fmt.Errorf("allreduce: bench: listener file: %w", err)
		}
		defer f.Close()
		files[i], addrs[i] = f, lis.Addr().String()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]BenchResult, cfg.Procs)
	errs := make([]error, cfg.Procs)
	var wg sync.WaitGroup
	for rank := range cfg.Procs {
		cmd := exec.CommandContext(ctx, exe, append(append([]string(nil), args...),
			"--member-rank", strconv.Itoa(rank), "--member-addrs", strings.Join(addrs, ","))...)
		cmd.ExtraFiles = []*os.File{files[rank]}
		cmd.Stderr = stderr
		if os.Getenv("GOMAXPROCS") == "" {
			// The members share the machine's cores, as torch_ref.py's ranks do with one
			// thread each: more scheduler threads than cores only add handoffs.
			cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(max(1, runtime.NumCPU()/cfg.Procs)))
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return BenchResult{}, err
		}
		if err := cmd.Start(); err != nil {
			return BenchResult{}, fmt.Errorf("allreduce: bench: start member %d: %w", rank, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(out)
			var line []byte
			for sc.Scan() {
				line = append(line[:0], sc.Bytes()...)
			}
			err := cmd.Wait()
			if err == nil {
				err = json.Unmarshal(line, &results[rank])
			}
			if err != nil {
				errs[rank] = fmt.Errorf("allreduce: bench: member %d: %w", rank, err)
				cancel() // the others would wait for it until their deadline
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return BenchResult{}, err
	}
	return results[0], nil
}

// BenchMember is one member process of Bench: it serves the ring on lis and runs the workload.
func BenchMember(ctx context.Context, cfg BenchConfig, rank int, addrs []string, lis net.Listener, log *slog.Logger) (BenchResult, error) {
	if err := cfg.validate(); err != nil {
		return BenchResult{}, err
	}
	if rank < 0 || rank >= len(addrs) || len(addrs) != cfg.Procs {
		return BenchResult{}, fmt.Errorf("allreduce: bench: rank %d of %d addresses, %d procs", rank, len(addrs), cfg.Procs)
	}
	r, err := New(Config{
		Self:       addrs[rank],
		ChunkBytes: cfg.ChunkBytes,
		Timeout:    cfg.Timeout,
		TCPOnly:    cfg.TCPOnly,
		Logger:     log,
	})
	if err != nil {
		return BenchResult{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	serveErr := make(chan error, 1)
	go func() { serveErr <- r.Serve(ctx, lis) }()
	res, err := benchRun(ctx, r, cfg, rank, addrs)
	cancel()
	r.Close()
	if serr := <-serveErr; err == nil {
		err = serr
	}
	return res, err
}

func benchRun(ctx context.Context, r *Ring, cfg BenchConfig, rank int, addrs []string) (BenchResult, error) {
	n := cfg.Bytes / 4
	// Every member can compute every member's data, so each checks the result itself.
	input := func(rk int) []float32 {
		rng := rand.New(rand.NewPCG(uint64(rk), 99))
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	mine := input(rank)
	want := make([]float64, n)
	for rk := range cfg.Procs {
		for i, v := range input(rk) {
			want[i] += float64(v)
		}
	}
	buf := make([]float32, n)
	barrier := make([]float32, 1)
	op := Op{Run: "bench", Epoch: 1, Members: addrs, Codec: cfg.Codec}
	step := uint64(0)
	do := func(b []float32) (Result, error) {
		op.Step = step
		step++
		return r.AllReduce(ctx, op, b)
	}
	// The first operation is checked against a float64 sum; the rest, like torch_ref.py's,
	// reduce the same buffer back to back between two barriers. Sums grow by a factor of
	// Procs per operation, so the input is restored now and then to stay finite.
	copy(buf, mine)
	if _, err := do(buf); err != nil {
		return BenchResult{}, err
	}
	var maxErr, maxAbs float64
	for i, v := range buf {
		maxErr = max(maxErr, math.Abs(float64(v)-want[i]))
		maxAbs = max(maxAbs, math.Abs(want[i]))
	}
	for range cfg.Warmup - 1 {
		if _, err := do(buf); err != nil {
			return BenchResult{}, err
		}
	}
	restore := max(1, int(30/math.Log2(float64(max(cfg.Procs, 2)))))
	if _, err := do(barrier); err != nil {
		return BenchResult{}, err
	}
	start := time.Now()
	var wire int64
	for i := range cfg.Iters {
		if i%restore == 0 {
			copy(buf, mine)
		}
		res, err := do(buf)
		if err != nil {
			return BenchResult{}, err
		}
		wire += res.WireBytesSent
	}
	if _, err := do(barrier); err != nil {
		return BenchResult{}, err
	}
	elapsed := time.Since(start)
	sec := elapsed.Seconds() / float64(cfg.Iters)
	algbw := float64(cfg.Bytes) / sec / 1e9
	return BenchResult{
		Peer:           "ncsn",
		Procs:          cfg.Procs,
		Bytes:          cfg.Bytes,
		SecPerOp:       round(sec, 6),
		AlgbwGBps:      round(algbw, 3),
		BusbwGBps:      round(algbw*2*float64(cfg.Procs-1)/float64(cfg.Procs), 3),
		Codec:          cfg.Codec.Quant.String(),
		Compressor:     cfg.Codec.Compressor.String(),
		ChunkBytes:     r.pieceElems * 4,
		WireBytesPerOp: wire / int64(cfg.Iters),
		MaxRelError:    maxErr / max(maxAbs, 1e-30),
		GoMaxProcs:     runtime.GOMAXPROCS(0),
		Socket:         r.m.socket(),
	}, nil
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// lockedWriter serialises the members' writes to one shared writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
