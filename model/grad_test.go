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
	g, err := n.NewGrad(batch)
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
	perStep := func(batch, steps int) (bytes float64, grow int64) {
		n, err := New(smallUNet, []int{1, 16, 16})
		if err != nil {
			t.Fatal(err)
		}
		n.Init(1)
		g, err := n.NewGrad(batch)
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
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := 0; i < steps; i++ {
			step()
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		t.Logf("batch %d: %.0f bytes, %.1f allocations per step", batch, float64(m1.TotalAlloc-m0.TotalAlloc)/float64(steps), float64(m1.Mallocs-m0.Mallocs)/float64(steps))
		return float64(m1.TotalAlloc-m0.TotalAlloc) / float64(steps), int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	}
	small, _ := perStep(2, 100)
	big, grow := perStep(32, 1000)
	// One activation of the batch-32 graph is 32·16·16·4 float32 = 128 KiB.
	if big-small > 16<<10 {
		t.Errorf("a step allocates %.0f bytes at batch 32, %.0f at batch 2", big, small)
	}
	if grow > 1<<20 {
		t.Errorf("heap grew by %d bytes over 1,000 steps", grow)
	}
}
