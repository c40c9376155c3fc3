package model

import (
	"fmt"
	"math"
	"runtime"
	"time"

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
	g, err := net.NewGrad(batch)
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
		if err := g.Run(x, z, sig, grad, losses); err != nil {
			return StepBench{}, err
		}
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0, alloc0 := ms.HeapInuse, ms.TotalAlloc
	t0 := time.Now()
	for i := 0; i < iters; i++ {
		if err := g.Run(x, z, sig, grad, losses); err != nil {
			return StepBench{}, err
		}
	}
	sec := time.Since(t0).Seconds() / float64(iters)
	runtime.ReadMemStats(&ms)
	alloc1 := ms.TotalAlloc
	runtime.GC()
	runtime.ReadMemStats(&ms)
	fl := ForwardFLOPs(cfg, shape)
	round := func(v float64, d int) float64 { p := math.Pow(10, float64(d)); return math.Round(v*p) / p }
	return StepBench{
		Net: cfg.WithDefaults().Arch, Batch: batch, Params: len(net.Params().Data),
		FwdMFLOPPerSample:  round(fl/1e6, 3),
		SecPerStep:         round(sec, 6),
		SamplesPerSec:      round(float64(batch)/sec, 1),
		GFLOPS:             round(3*fl*float64(batch)/sec/1e9, 2),
		Threads:            runtime.GOMAXPROCS(0),
		Iters:              iters,
		AllocBytesPerStep:  math.Round(float64(alloc1-alloc0) / float64(iters)),
		HeapMiBAfterWarmup: round(float64(heap0)/(1<<20), 1),
		HeapMiBAtEnd:       round(float64(ms.HeapInuse)/(1<<20), 1),
	}, nil
}
