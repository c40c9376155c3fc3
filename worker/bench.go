package worker

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/ncsn/ncsn/internal/cputime"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// TrainBench is one whole-step benchmark result: the training fields of
// shared/bench/torch_ref.py train's summary line, with CPU time and memory
// figures.
type TrainBench struct {
	Workload string `json:"workload"`
	Net      string `json:"net"`
	// Width is the first U-Net width (channels W, 2W, 4W); 0 for the mlp.
	Width         int     `json:"width,omitempty"`
	Batch         int     `json:"batch"`
	Steps         int64   `json:"steps"`
	Params        int     `json:"params"`
	Loss          float64 `json:"loss"` // the last step's mean loss
	TrainSeconds  float64 `json:"train_seconds"`
	SamplesPerSec float64 `json:"samples_per_sec"`
	SecPerStep    float64 `json:"sec_per_step"`
	// CPUSecPerStep is the process's CPU time (all threads) per step.
	CPUSecPerStep      float64 `json:"cpu_sec_per_step"`
	Threads            int     `json:"threads"`
	Warmup             int     `json:"warmup"`
	AllocBytesPerStep  float64 `json:"alloc_bytes_per_step"`
	HeapMiBAfterWarmup float64 `json:"heap_mib_after_warmup"`
	// HeapMiBMax is the largest heap seen at ten points of the timed steps.
	HeapMiBMax   float64 `json:"heap_mib_max"`
	HeapMiBAtEnd float64 `json:"heap_mib_at_end"`
}

// BenchTrain times rc.Run.Steps steps of the single-process training loop
// after warmup untimed ones: everything a step costs — the batch from the
// data (with its transforms), the noise, forward and backward, Adam and the
// EMA — and nothing else (no checkpoints, logs or snapshots).
func BenchTrain(ctx context.Context, rc config.Config, warmup int) (TrainBench, error) {
	if warmup < 0 {
		return TrainBench{}, fmt.Errorf("worker: bench: warmup %d, want >= 0", warmup)
	}
	r, err := newReplica(rc)
	if err != nil {
		return TrainBench{}, err
	}
	defer r.trainer.Close()
	B := rc.Train.GlobalBatch
	grad := make([]float32, len(r.state.Params))
	stats := model.NewLossStats(len(r.sigmas))
	step := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		stats.Reset()
		if err := r.trainer.Compute(uint64(r.state.Step()), 0, B, grad, stats); err != nil {
			return err
		}
		_, err := r.state.Apply(grad, B)
		return err
	}
	for i := 0; i < warmup; i++ {
		if err := step(); err != nil {
			return TrainBench{}, err
		}
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0, alloc0, heapMax := ms.HeapInuse, ms.TotalAlloc, ms.HeapInuse
	cpu0, cpuOK := cputime.Process()
	steps := rc.Run.Steps
	every := max(1, steps/10)
	t0 := time.Now()
	for i := int64(1); i <= steps; i++ {
		if err := step(); err != nil {
			return TrainBench{}, err
		}
		if i%every == 0 {
			runtime.ReadMemStats(&ms)
			heapMax = max(heapMax, ms.HeapInuse)
		}
	}
	sec := time.Since(t0).Seconds()
	cpu1, _ := cputime.Process()
	runtime.ReadMemStats(&ms)
	alloc1 := ms.TotalAlloc
	runtime.GC()
	runtime.ReadMemStats(&ms)
	res := TrainBench{
		Workload: "train", Net: rc.Model.Arch, Batch: B, Steps: steps, Params: len(r.state.Params),
		Loss:               round(stats.Mean(), 4),
		TrainSeconds:       round(sec, 3),
		SamplesPerSec:      round(float64(steps)*float64(B)/sec, 1),
		SecPerStep:         round(sec/float64(steps), 6),
		Threads:            runtime.GOMAXPROCS(0),
		Warmup:             warmup,
		AllocBytesPerStep:  math.Round(float64(alloc1-alloc0) / float64(steps)),
		HeapMiBAfterWarmup: mib(heap0),
		HeapMiBMax:         mib(heapMax),
		HeapMiBAtEnd:       mib(ms.HeapInuse),
	}
	if rc.Model.Arch == "unet" {
		res.Width = rc.Model.Channels[0]
	}
	if cpuOK {
		res.CPUSecPerStep = round((cpu1-cpu0).Seconds()/float64(steps), 6)
	}
	return res, nil
}

func round(v float64, d int) float64 { p := math.Pow(10, float64(d)); return math.Round(v*p) / p }

func mib(b uint64) float64 { return round(float64(b)/(1<<20), 1) }
