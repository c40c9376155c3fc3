package model

import (
	"fmt"
	"math"
	"runtime"
	"testing"

	"gorgonia.org/gorgonia"

	"github.com/ncsn/ncsn/internal/cputime"
)

// tapedScore evaluates s(x, σ) the way the training path does: the graph of
// the network's ops run by gorgonia's tape machine.
func tapedScore[T Float](t testing.TB, n *NetOf[T], batch int, x, sigma []T) []T {
	t.Helper()
	buildMu.Lock()
	b := newBuilder(n, batch, false)
	d := feed[T]{net: n, batch: batch}
	o, err := b.forward(&d)
	buildMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	vm := gorgonia.NewTapeMachine(b.g)
	defer vm.Close()
	d.fill(x, sigma)
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	out := make([]T, batch*n.dim)
	d.fromGraph(out, o.Value().Data().([]T), sigma)
	return out
}

// The forward-only scorer computes what the tape machine computes, for both
// networks in both precisions, batch sizes that split evenly and unevenly
// over the parts, and any split of the batch.
func TestScorerMatchesTape(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		shape []int
	}{
		{"mlp", Config{Arch: "mlp", Hidden: 16, Depth: 2}, []int{2}},
		{"mlp-deep", Config{Arch: "mlp"}, []int{5}},
		{"unet", smallUNet, []int{3, 8, 8}},
		{"unet-1ch", Config{Arch: "unet", Channels: []int{8, 16, 16}, Emb: 8, Groups: 4}, []int{1, 12, 12}},
	} {
		for _, batch := range []int{1, 2, 5, 8} {
			for _, split := range []struct{ parts, nw int }{{1, 1}, {1, 2}, {2, 1}, {3, 1}} {
				if split.parts > batch {
					continue
				}
				name := fmt.Sprintf("%s/b%d/parts%d-nw%d", c.name, batch, split.parts, split.nw)
				t.Run(name+"/f32", func(t *testing.T) {
					n, err := New(c.cfg, c.shape)
					if err != nil {
						t.Fatal(err)
					}
					checkScorer(t, n, batch, split.parts, split.nw, 1e-5)
				})
				t.Run(name+"/f64", func(t *testing.T) {
					n, err := New64(c.cfg, c.shape)
					if err != nil {
						t.Fatal(err)
					}
					checkScorer(t, n, batch, split.parts, split.nw, 1e-12)
				})
			}
		}
	}
}

func checkScorer[T Float](t *testing.T, n *NetOf[T], batch, parts, nw int, tol float64) {
	n.Init(uint64(batch))
	x, _, sigma := batchData[T](uint64(7*batch), batch, n.dim)
	want := tapedScore(t, n, batch, x, sigma)
	s, err := n.newScorer(batch, parts, nw)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make([]T, len(x))
	// Twice: the second run starts from the first's pooled buffers.
	for run := 0; run < 2; run++ {
		if err := s.Score(x, sigma, got); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if d := math.Abs(float64(got[i] - want[i])); d > tol*math.Max(1, math.Abs(float64(want[i]))) {
				t.Fatalf("run %d: value %d: forward-only %v, tape %v", run, i, got[i], want[i])
			}
		}
	}
}

// BenchmarkScore times one forward pass of the reference networks at the
// sampling benchmark's batch sizes: the tape machine against the
// forward-only program, with the ops splitting the batch (split-ops) or one
// program per core (split-batch).
func BenchmarkScore(b *testing.B) {
	for _, c := range []struct {
		name  string
		cfg   Config
		shape []int
		batch int
	}{
		{"unet-b64", Config{Arch: "unet"}, []int{1, 28, 28}, 64},
		{"mlp-b5000", Config{Arch: "mlp"}, []int{2}, 5000},
	} {
		n, err := New(c.cfg, c.shape)
		if err != nil {
			b.Fatal(err)
		}
		n.Init(1)
		dim := prod(c.shape)
		x, _, sigma := batchData[float32](1, c.batch, dim)
		out := make([]float32, len(x))
		b.Run(c.name+"/tape", func(b *testing.B) {
			buildMu.Lock()
			bl := newBuilder(n, c.batch, false)
			d := feed[float32]{net: n, batch: c.batch}
			_, err := bl.forward(&d)
			buildMu.Unlock()
			if err != nil {
				b.Fatal(err)
			}
			vm := gorgonia.NewTapeMachine(bl.g)
			defer vm.Close()
			defer reportCPU(b)()
			for b.Loop() {
				d.fill(x, sigma)
				if err := vm.RunAll(); err != nil {
					b.Fatal(err)
				}
				vm.Reset()
			}
		})
		w := workers(c.batch)
		for _, s := range []struct {
			name      string
			parts, nw int
		}{{"split-ops", 1, w}, {"split-batch", w, 1}} {
			b.Run(c.name+"/"+s.name, func(b *testing.B) {
				sc, err := n.newScorer(c.batch, s.parts, s.nw)
				if err != nil {
					b.Fatal(err)
				}
				defer reportCPU(b)()
				for b.Loop() {
					if err := sc.Score(x, sigma, out); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// reportCPU starts measuring the process's CPU time; the function it returns
// reports CPU-ns per op.
func reportCPU(b *testing.B) func() {
	c0, ok0 := cputime.Process()
	return func() {
		c1, ok1 := cputime.Process()
		if ok0 && ok1 && b.N > 0 {
			b.ReportMetric(float64((c1-c0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}
}

// A steady-state forward pass allocates nothing the size of an activation:
// only the goroutines that split the batch (a few small closures per op),
// the same number on every call.
func TestScorerSteadyStateAllocs(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		shape []int
		batch int
	}{
		{"mlp", Config{Arch: "mlp"}, []int{2}, 500},
		{"unet", Config{Arch: "unet", Channels: []int{8, 16, 32}, Emb: 16, Groups: 4}, []int{1, 16, 16}, 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := New(c.cfg, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			n.Init(1)
			s, err := n.NewScorer(c.batch)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			x, _, sigma := batchData[float32](1, c.batch, n.dim)
			out := make([]float32, len(x))
			score := func() {
				if err := s.Score(x, sigma, out); err != nil {
					t.Fatal(err)
				}
			}
			score()
			ops, largest := 0, 0
			for _, p := range s.parts {
				ops += len(p.steps)
				written := 0
				for _, st := range p.steps {
					largest = max(largest, len(st.out))
					written += len(st.out)
				}
				// Buffers are reused within a pass, not one per activation.
				if 2*p.held > written {
					t.Errorf("the program holds %d values for activations of %d in all", p.held, written)
				}
			}
			a10, a100 := testing.AllocsPerRun(10, score), testing.AllocsPerRun(100, score)
			if a10 > float64(4*ops) || a100 > float64(4*ops) {
				t.Errorf("%v and %v allocations per pass, want at most 4 per op (%d ops)", a10, a100, ops)
			}
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			for range 100 {
				score()
			}
			runtime.ReadMemStats(&m1)
			if per := (m1.TotalAlloc - m0.TotalAlloc) / 100; per >= uint64(4*largest) {
				t.Errorf("%d bytes allocated per pass, as much as an activation (%d bytes)", per, 4*largest)
			}
		})
	}
}

// 1,000 Langevin steps leave the heap where the first 100 left it.
func TestSamplerHeapFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 sampler steps")
	}
	n, err := New(Config{Arch: "unet", Channels: []int{8, 16, 32}, Emb: 16, Groups: 4}, []int{1, 16, 16})
	if err != nil {
		t.Fatal(err)
	}
	n.Init(1)
	const batch = 8
	sc, err := n.NewScorer(batch)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	var ms runtime.MemStats
	heap := map[int]uint64{}
	s := &Sampler{Model: sc, Batch: batch, Dim: n.dim, Seed: 1, Progress: func(done, _ int) {
		if done == 100 || done == 1000 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			heap[done] = ms.HeapInuse
		}
	}}
	x := make([]float32, batch*n.dim)
	InitUniform(x, 0, 1, 1)
	if err := s.Langevin(t.Context(), x, 0.1, 1000, 1e-3); err != nil {
		t.Fatal(err)
	}
	if heap[1000] > heap[100]+256<<10 {
		t.Errorf("heap in use grew from %d to %d bytes between steps 100 and 1,000", heap[100], heap[1000])
	}
}
