package model

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time: on a shared machine, CPU
// seconds per sample compare implementations better than wall time.
func cpuTime(b *testing.B) time.Duration {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		b.Fatal(err)
	}
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

func benchGrad(b *testing.B, cfg Config, shape []int, batch int) {
	n, err := New(cfg, shape)
	if err != nil {
		b.Fatal(err)
	}
	n.Init(1)
	g, err := n.newGrad(batch, 2)
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	x, z, sigma := batchData[float32](1, batch, prod(shape))
	grad, losses := make([]float32, len(n.Params().Data)), make([]float32, batch)
	if err := g.Run(x, z, sigma, grad, losses); err != nil { // first run sizes the scratch
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	for i := 0; i < b.N; i++ {
		if err := g.Run(x, z, sigma, grad, losses); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime(b) - cpu0
	b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(batch*b.N)/cpu.Seconds(), "samples/cpu-s")
}

func BenchmarkGradUNet64(b *testing.B) {
	benchGrad(b, Config{Arch: "unet"}, []int{1, 28, 28}, 64)
}

func BenchmarkGradUNet128(b *testing.B) {
	benchGrad(b, Config{Arch: "unet"}, []int{1, 28, 28}, 128)
}

func BenchmarkGradMLP512(b *testing.B) {
	benchGrad(b, Config{Arch: "mlp"}, []int{2}, 512)
}

// TestMemoryFlat: after warm-up a step allocates only gorgonia's per-run
// bookkeeping, the same whatever the batch size (no activation-sized buffers),
// and the heap does not grow over 1,000 steps.
func TestMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 steps")
	}
	// grow is the heap's growth over each half of the steps: a leak grows both, while a
	// bounded cache filled once (gemm keeps its idle workers, about a megabyte of buffers
	// each, and creates one more when calls overlap under load) grows one at most.
	perStep := func(batch, steps int) (bytes float64, grow [2]int64) {
		n, err := New(smallUNet, []int{1, 16, 16})
		if err != nil {
			t.Fatal(err)
		}
		n.Init(1)
		g, err := n.newGrad(batch, 2)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		x, z, sigma := batchData[float32](1, batch, 256)
		grad, losses := make([]float32, len(n.Params().Data)), make([]float32, batch)
		step := func() {
			if err := g.Run(x, z, sigma, grad, losses); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 10; i++ {
			step()
		}
		var m [3]runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m[0])
		for h := 1; h <= 2; h++ {
			for i := 0; i < steps/2; i++ {
				step()
			}
			runtime.GC()
			runtime.ReadMemStats(&m[h])
			grow[h-1] = int64(m[h].HeapAlloc) - int64(m[h-1].HeapAlloc)
		}
		t.Logf("batch %d: %.0f bytes, %.1f allocations per step; heap growth per half %v bytes", batch,
			float64(m[2].TotalAlloc-m[0].TotalAlloc)/float64(steps), float64(m[2].Mallocs-m[0].Mallocs)/float64(steps), grow)
		return float64(m[2].TotalAlloc-m[0].TotalAlloc) / float64(steps), grow
	}
	small, _ := perStep(2, 100)
	big, grow := perStep(32, 1000)
	// One activation of the batch-32 graph is 32·16·16·4 float32 = 128 KiB.
	if big-small > 16<<10 {
		t.Errorf("a step allocates %.0f bytes at batch 32, %.0f at batch 2", big, small)
	}
	if min(grow[0], grow[1]) > 256<<10 {
		t.Errorf("heap grew by %v bytes over each 500 of 1,000 steps", grow)
	}
}
