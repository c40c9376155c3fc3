package data

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// indexSet is a dataset whose example i is the single value i, so a filled
// buffer shows which indices were taken.
type indexSet int

func (n indexSet) Len() int     { return int(n) }
func (n indexSet) Shape() []int { return []int{1} }
func (n indexSet) Example(i int, dst []float32) {
	dst[0] = float32(i)
}

func TestSliceErrors(t *testing.T) {
	tests := []struct {
		batch, rank, workers int
		want                 string
	}{
		{4, 0, 0, "0 workers for a global batch of 4, want 1..4"},
		{4, 0, 5, "5 workers for a global batch of 4, want 1..4"},
		{4, -1, 2, "rank -1 of 2 workers"},
		{4, 2, 2, "rank 2 of 2 workers, want 0..1"},
	}
	for _, tt := range tests {
		_, _, err := Slice(tt.batch, tt.rank, tt.workers)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Slice(%d, %d, %d) error = %v, want %q", tt.batch, tt.rank, tt.workers, err, tt.want)
		}
	}
}

// TestSlicesPartition checks, for every W in 1..B, that the workers' slices
// are contiguous, in rank order, cover [0, B) exactly once and differ in size
// by at most one.
func TestSlicesPartition(t *testing.T) {
	for _, batch := range []int{1, 2, 3, 7, 64, 100, 257} {
		for w := 1; w <= batch; w++ {
			next := 0
			minSz, maxSz := batch+1, -1
			for r := range w {
				lo, hi, err := Slice(batch, r, w)
				if err != nil {
					t.Fatalf("B=%d W=%d r=%d: %v", batch, w, r, err)
				}
				if lo != next || hi < lo {
					t.Fatalf("B=%d W=%d r=%d: [%d, %d), want to start at %d", batch, w, r, lo, hi, next)
				}
				next = hi
				minSz, maxSz = min(minSz, hi-lo), max(maxSz, hi-lo)
			}
			if next != batch {
				t.Fatalf("B=%d W=%d: slices end at %d", batch, w, next)
			}
			if maxSz-minSz > 1 || minSz < 1 {
				t.Fatalf("B=%d W=%d: slice sizes %d..%d", batch, w, minSz, maxSz)
			}
		}
	}
}

// TestEveryExampleOncePerEpoch walks whole epochs for batch sizes that do and
// do not divide the set, including batches larger than the set.
func TestEveryExampleOncePerEpoch(t *testing.T) {
	tests := []struct{ n, batch int }{
		{10, 1}, {10, 3}, {10, 5}, {10, 10}, {7, 16}, {1000, 64}, {1, 4},
	}
	for _, tt := range tests {
		s, err := NewSampler(indexSet(tt.n), tt.batch, 99, Config{})
		if err != nil {
			t.Fatal(err)
		}
		const epochs = 5
		steps := (epochs*tt.n + tt.batch - 1) / tt.batch
		var seq []int
		buf := make([]float32, tt.batch)
		for step := range uint64(steps) {
			if err := s.Fill(step, 0, tt.batch, buf); err != nil {
				t.Fatal(err)
			}
			for j, v := range buf {
				if got := s.Index(step, j); got != int(v) {
					t.Fatalf("n=%d B=%d step %d pos %d: Index %d, Fill %v", tt.n, tt.batch, step, j, got, v)
				}
				seq = append(seq, int(v))
			}
		}
		var orders [][]int
		for e := range epochs {
			epoch := slices.Clone(seq[e*tt.n : (e+1)*tt.n])
			orders = append(orders, slices.Clone(epoch))
			slices.Sort(epoch)
			for i, v := range epoch {
				if v != i {
					t.Fatalf("n=%d B=%d epoch %d: sorted indices %v, want 0..%d once each", tt.n, tt.batch, e, epoch, tt.n-1)
				}
			}
		}
		if tt.n >= 10 && slices.Equal(orders[0], orders[1]) {
			t.Errorf("n=%d B=%d: epochs 0 and 1 in the same order %v", tt.n, tt.batch, orders[0])
		}
	}
}

// TestUnionIndependentOfWorkers fills a step slice by slice for every W and
// compares it with one worker's fill: the union of the slices is the same
// batch, dequantisation, flips and centring included.
func TestUnionIndependentOfWorkers(t *testing.T) {
	ds := NewSynthetic(8, 1, 1, Train, 50)
	const batch = 12
	size := Size(ds)
	ref, err := NewSampler(ds, batch, 5, Config{Dequantize: true, Flip: true, Centered: true})
	if err != nil {
		t.Fatal(err)
	}
	// Steps 3 and 4 straddle the first epoch boundary (positions 48..59).
	for _, step := range []uint64{0, 3, 4, 9, 1000} {
		want := make([]float32, batch*size)
		if err := ref.Fill(step, 0, batch, want); err != nil {
			t.Fatal(err)
		}
		for w := 1; w <= batch; w++ {
			got := make([]float32, batch*size)
			for r := range w {
				// A fresh sampler per worker, as on separate machines.
				s, err := NewSampler(ds, batch, 5, Config{Dequantize: true, Flip: true, Centered: true})
				if err != nil {
					t.Fatal(err)
				}
				lo, hi, err := s.Slice(r, w)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Fill(step, lo, hi, got[lo*size:hi*size]); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: W=%d gives a different batch than W=1", step, w)
			}
		}
	}
}

func TestSamplerDeterminism(t *testing.T) {
	a, _ := NewSampler(indexSet(100), 8, 1, Config{})
	b, _ := NewSampler(indexSet(100), 8, 1, Config{})
	c, _ := NewSampler(indexSet(100), 8, 2, Config{})
	x, y, z := make([]float32, 8), make([]float32, 8), make([]float32, 8)
	// b visits steps in another order, so its cache differs from a's.
	for _, step := range []uint64{40, 0, 13, 12, 25, 1} {
		_ = b.Fill(step, 0, 8, y)
	}
	same := true
	for step := range uint64(40) {
		if err := a.Fill(step, 0, 8, x); err != nil {
			t.Fatal(err)
		}
		_ = b.Fill(step, 0, 8, y)
		_ = c.Fill(step, 0, 8, z)
		if !slices.Equal(x, y) {
			t.Fatalf("step %d: %v then %v from the same seed", step, x, y)
		}
		same = same && slices.Equal(x, z)
	}
	if same {
		t.Fatal("seeds 1 and 2 give the same 40 batches")
	}
}

func TestFillErrors(t *testing.T) {
	s, err := NewSampler(indexSet(10), 4, 1, Config{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		lo, hi, n int
		want      string
	}{
		{-1, 2, 3, "positions [-1, 2) outside"},
		{0, 5, 5, "positions [0, 5) outside the batch [0, 4)"},
		{3, 2, 0, "positions [3, 2)"},
		{0, 2, 3, "buffer of 3 values for 2 examples of 1, want 2"},
	}
	for _, tt := range tests {
		err := s.Fill(0, tt.lo, tt.hi, make([]float32, tt.n))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Fill(0, %d, %d, [%d]) = %v, want %q", tt.lo, tt.hi, tt.n, err, tt.want)
		}
	}
	if _, err := NewSampler(indexSet(0), 4, 1, Config{}); err == nil {
		t.Error("NewSampler over an empty set succeeded")
	}
	if _, err := NewSampler(indexSet(3), 0, 1, Config{}); err == nil || !strings.Contains(err.Error(), "train.global_batch: 0") {
		t.Errorf("NewSampler with batch 0: %v", err)
	}
}

func TestFillDoesNotAllocate(t *testing.T) {
	ds := NewSynthetic(28, 1, 1, Train, 1000)
	s, err := NewSampler(ds, 64, 3, Config{Dequantize: true, Flip: true, Centered: true})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]float32, 16*Size(ds))
	step := uint64(0)
	// Warm both permutation slots first.
	for range 40 {
		_ = s.Fill(step, 16, 32, buf)
		step++
	}
	allocs := testing.AllocsPerRun(50, func() {
		if err := s.Fill(step, 16, 32, buf); err != nil {
			t.Fatal(err)
		}
		step++
	})
	if allocs != 0 {
		t.Fatalf("Fill allocates %.1f times per call", allocs)
	}
}

// TestDequantize checks that each pixel lands in its own 8-bit bin and that
// the noise is reproducible from the key.
func TestDequantize(t *testing.T) {
	x := make([]float32, 256*40)
	for i := range x {
		x[i] = float32(i%256) / 255
	}
	y := slices.Clone(x)
	Dequantize(x, keyrand.New(1, 2, 3))
	Dequantize(y, keyrand.New(1, 2, 3))
	if !slices.Equal(x, y) {
		t.Fatal("same key, different dequantisation")
	}
	var mean float64
	for i, v := range x {
		k := i % 256
		lo, hi := float32(k)/256, float32(k+1)/256
		if v < lo || v > hi {
			t.Fatalf("pixel %d/255 dequantised to %v, outside [%v, %v]", k, v, lo, hi)
		}
		mean += float64(v)*256 - float64(k)
	}
	if mean /= float64(len(x)); math.Abs(mean-0.5) > 0.02 {
		t.Fatalf("mean offset within bins %.3f, want 0.5", mean)
	}
	z := make([]float32, len(x))
	for i := range z {
		z[i] = float32(i%256) / 255
	}
	Dequantize(z, keyrand.New(1, 2, 4))
	if slices.Equal(x, z) {
		t.Fatal("different keys, same dequantisation")
	}
}

func BenchmarkFillSynthetic(b *testing.B) {
	ds := NewSynthetic(28, 1, 1, Train, DefaultTrainSize)
	s, err := NewSampler(ds, 128, 1, Config{Dequantize: true})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]float32, 128*Size(ds))
	b.ReportAllocs()
	step := uint64(0)
	for b.Loop() {
		if err := s.Fill(step, 0, 128, buf); err != nil {
			b.Fatal(err)
		}
		step++
	}
}
