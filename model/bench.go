package model

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/ncsn/ncsn/internal/cputime"
	"github.com/ncsn/ncsn/internal/keyrand"
)

// ForwardFLOPs counts the forward pass's multiply-adds of convolutions and
// linear layers for one sample, times 2 — the count of
// shared/bench/torch_ref.py, so the two benchmarks' GFLOP/s compare.
func ForwardFLOPs(cfg Config, shape []int) float64 {
	cfg = cfg.WithDefaults()
	lin := func(in, out int) float64 { return float64(in * out) }
	var macs float64
	switch cfg.Arch {
	case "mlp":
		in := shape[0] + 1
		for i := 0; i < cfg.Depth; i++ {
			macs += lin(in, cfg.Hidden)
			in = cfg.Hidden
		}
		macs += lin(in, shape[0])
	case "unet":
		cin, h, w := shape[0], shape[1], shape[2]
		c1, c2, c3, e := cfg.Channels[0], cfg.Channels[1], cfg.Channels[2], cfg.Emb
		conv := func(hw, in, out int) float64 { return float64(hw * out * in * 9) }
		res := func(hw, c int) float64 { return 2*conv(hw, c, c) + lin(e, c) }
		hw1, hw2, hw3 := h*w, (h/2)*(w/2), (h/4)*(w/4)
		macs = lin(1, e) + lin(e, e) +
			conv(hw1, cin, c1) + res(hw1, c1) +
			conv(hw2, c1, c2) + res(hw2, c2) +
			conv(hw3, c2, c3) + 2*res(hw3, c3) +
			conv(hw2, c3+c2, c2) + res(hw2, c2) +
			conv(hw1, c2+c1, c1) + res(hw1, c1) +
			conv(hw1, c1, cin)
	}
	return 2 * macs
}

// StepBench is one compute benchmark result, with the JSON fields of
// shared/bench/REFERENCE.md plus memory figures.
type StepBench struct {
	Net                string  `json:"net"`
	Batch              int     `json:"batch"`
	Params             int     `json:"params"`
	FwdMFLOPPerSample  float64 `json:"fwd_mflop_per_sample"`
	SecPerStep         float64 `json:"sec_per_step"`
	SamplesPerSec      float64 `json:"samples_per_sec"`
	GFLOPS             float64 `json:"gflops"`
	Threads            int     `json:"threads"`
	Iters              int     `json:"iters"`
	AllocBytesPerStep  float64 `json:"alloc_bytes_per_step"`
	HeapMiBAfterWarmup float64 `json:"heap_mib_after_warmup"`
	HeapMiBAtEnd       float64 `json:"heap_mib_at_end"`
}

// BenchStep times the DSM training step (forward, backward, every gradient in
// the flat buffer) of a network on random data, σ drawn per sample from the
// 10 geometric levels 1…0.01 as torch_ref.py does. Data preparation is not timed.
func BenchStep(cfg Config, shape []int, batch, iters int) (StepBench, error) {
	if iters < 1 {
		return StepBench{}, fmt.Errorf("model: bench: iters %d, want >= 1", iters)
	}
	net, err := New(cfg, shape)
	if err != nil {
		return StepBench{}, err
	}
	net.Init(0)
	// The objective training runs (a part of the batch per core), not a bare graph.
	g, err := net.NewEstimator(DefaultLoss(), batch)
	if err != nil {
		return StepBench{}, err
	}
	defer g.Close()
	dim := 1
	for _, d := range shape {
		dim *= d
	}
	sigmas := NoiseConfig{SigmaMax: 1, SigmaMin: 0.01, Levels: 10}.Sigmas()
	r := keyrand.New(0xbe9c4)
	x, z := make([]float32, batch*dim), make([]float32, batch*dim)
	sig, losses := make([]float32, batch), make([]float32, batch)
	for i := range x {
		x[i] = float32(r.Norm())
		z[i] = float32(r.Norm())
	}
	for i := range sig {
		sig[i] = float32(sigmas[r.IntN(len(sigmas))])
	}
	grad := make([]float32, len(net.Params().Data))
	for i := 0; i < 2; i++ {
		if err := g.Run(x, z, nil, sig, grad, losses); err != nil {
			return StepBench{}, err
		}
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0, alloc0 := ms.HeapInuse, ms.TotalAlloc
	t0 := time.Now()
	for i := 0; i < iters; i++ {
		if err := g.Run(x, z, nil, sig, grad, losses); err != nil {
			return StepBench{}, err
		}
	}
	sec := time.Since(t0).Seconds() / float64(iters)
	runtime.ReadMemStats(&ms)
	alloc1 := ms.TotalAlloc
	runtime.GC()
	runtime.ReadMemStats(&ms)
	fl := ForwardFLOPs(cfg, shape)
	return StepBench{
		Net: cfg.WithDefaults().Arch, Batch: batch, Params: len(net.Params().Data),
		FwdMFLOPPerSample:  round(fl/1e6, 3),
		SecPerStep:         round(sec, 6),
		SamplesPerSec:      round(float64(batch)/sec, 1),
		GFLOPS:             round(3*fl*float64(batch)/sec/1e9, 2),
		Threads:            runtime.GOMAXPROCS(0),
		Iters:              iters,
		AllocBytesPerStep:  math.Round(float64(alloc1-alloc0) / float64(iters)),
		HeapMiBAfterWarmup: mib(heap0),
		HeapMiBAtEnd:       mib(ms.HeapInuse),
	}, nil
}

// SampleBench is one sampling benchmark result: the fields of torch_ref.py
// sample plus CPU time and memory figures.
type SampleBench struct {
	Workload          string  `json:"workload"`
	Net               string  `json:"net"`
	Batch             int     `json:"batch"`
	SecPerStep        float64 `json:"sec_per_step"`
	SampleStepsPerSec float64 `json:"sample_steps_per_sec"`
	// CPUSecPerStep is the process's CPU time (all threads) per step.
	CPUSecPerStep float64 `json:"cpu_sec_per_step"`
	Threads       int     `json:"threads"`
	Iters         int     `json:"iters"`
	// AllocBytesPerStep is measured from the first timed step to the last.
	AllocBytesPerStep  float64 `json:"alloc_bytes_per_step"`
	HeapMiBAfterWarmup float64 `json:"heap_mib_after_warmup"`
	// HeapMiBMax is the largest heap seen at ten points of the timed steps.
	HeapMiBMax   float64 `json:"heap_mib_max"`
	HeapMiBAtEnd float64 `json:"heap_mib_at_end"`
}

// BenchSample times annealed Langevin steps, x ← x + α·s(x, σ) + √(2α)·z at
// σ = 0.1, α = 1e-3 from U[0, 1) as torch_ref.py sample does, through the
// sampler ncsn sample uses, after 3 untimed steps.
func BenchSample(ctx context.Context, cfg Config, shape []int, batch, iters int) (SampleBench, error) {
	if iters < 1 {
		return SampleBench{}, fmt.Errorf("model: bench: iters %d, want >= 1", iters)
	}
	net, err := New(cfg, shape)
	if err != nil {
		return SampleBench{}, err
	}
	net.Init(0)
	sc, err := net.NewScorer(batch)
	if err != nil {
		return SampleBench{}, err
	}
	defer sc.Close()
	const sigma, alpha = 0.1, 1e-3
	x := make([]float32, batch*net.dim)
	InitUniform(x, 0, 1, 0)
	// Heap figures at ten points of the timed steps, and the bytes
	// allocated from its first step to its last: the sampler's buffers,
	// allocated once per call, fall outside.
	var ms runtime.MemStats
	var heapMax, allocFirst, allocLast uint64
	timed := false
	every := max(1, iters/10)
	s := &Sampler{Model: sc, Batch: batch, Dim: net.dim, Progress: func(done, _ int) {
		if !timed || (done%every != 0 && done != 1 && done != iters) {
			return
		}
		runtime.ReadMemStats(&ms)
		heapMax = max(heapMax, ms.HeapInuse)
		if done == 1 {
			allocFirst = ms.TotalAlloc
		}
		allocLast = ms.TotalAlloc
	}}
	if err := s.Langevin(ctx, x, sigma, 3, alpha); err != nil {
		return SampleBench{}, err
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapInuse
	heapMax, timed = heap0, true
	cpu0, cpuOK := cputime.Process()
	t0 := time.Now()
	if err := s.Langevin(ctx, x, sigma, iters, alpha); err != nil {
		return SampleBench{}, err
	}
	sec := time.Since(t0).Seconds() / float64(iters)
	cpu1, _ := cputime.Process()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	r := SampleBench{
		Workload: "sample", Net: net.cfg.Arch, Batch: batch,
		SecPerStep:         round(sec, 6),
		SampleStepsPerSec:  round(float64(batch)/sec, 1),
		Threads:            runtime.GOMAXPROCS(0),
		Iters:              iters,
		HeapMiBAfterWarmup: mib(heap0),
		HeapMiBMax:         mib(heapMax),
		HeapMiBAtEnd:       mib(ms.HeapInuse),
	}
	if iters > 1 {
		r.AllocBytesPerStep = math.Round(float64(allocLast-allocFirst) / float64(iters-1))
	}
	if cpuOK {
		r.CPUSecPerStep = round((cpu1-cpu0).Seconds()/float64(iters), 6)
	}
	return r, nil
}

func round(v float64, d int) float64 { p := math.Pow(10, float64(d)); return math.Round(v*p) / p }

func mib(b uint64) float64 { return round(float64(b)/(1<<20), 1) }
