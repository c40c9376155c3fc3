package data

import (
	"math"
	"slices"
	"testing"

	"github.com/ncsn/ncsn/internal/keyrand"
)

func TestFlipMirrors(t *testing.T) {
	for _, tc := range []struct{ c, h, w int }{{1, 3, 4}, {3, 2, 5}, {1, 1, 1}} {
		x := make([]float32, tc.c*tc.h*tc.w)
		for i := range x {
			x[i] = float32(i)
		}
		y := slices.Clone(x)
		Flip(y, tc.c, tc.h, tc.w)
		for c := 0; c < tc.c; c++ {
			for h := 0; h < tc.h; h++ {
				for w := 0; w < tc.w; w++ {
					if got, want := y[(c*tc.h+h)*tc.w+w], x[(c*tc.h+h)*tc.w+tc.w-1-w]; got != want {
						t.Fatalf("%v: (%d,%d,%d) = %v, want the mirror's %v", tc, c, h, w, got, want)
					}
				}
			}
		}
		Flip(y, tc.c, tc.h, tc.w)
		if !slices.Equal(x, y) {
			t.Fatalf("%v: flipping twice is not the identity", tc)
		}
	}
}

func TestPrepareRestore(t *testing.T) {
	raw := []float32{0, 1.0 / 255, 0.5, 1}
	for _, tc := range []struct {
		name   string
		cfg    Config
		want   func(v float32) (lo, hi float32) // bounds of the prepared value
		lo, hi float64
	}{
		{"none", Config{}, func(v float32) (float32, float32) { return v, v }, 0, 1},
		{"centered", Config{Centered: true}, func(v float32) (float32, float32) { return 2*v - 1, 2*v - 1 }, -1, 1},
		{"dequantize", Config{Dequantize: true}, func(v float32) (float32, float32) {
			k := float32(math.Round(float64(v) * 255))
			return k / 256, (k + 1) / 256
		}, 0, 1},
		{"both", Config{Dequantize: true, Centered: true}, func(v float32) (float32, float32) {
			k := float32(math.Round(float64(v) * 255))
			return 2*k/256 - 1, 2*(k+1)/256 - 1
		}, -1, 1},
	} {
		x := slices.Clone(raw)
		tc.cfg.Prepare(x, keyrand.New(1, 2))
		for i, v := range x {
			if lo, hi := tc.want(raw[i]); v < lo || v > hi {
				t.Errorf("%s: %v → %v, want in [%v, %v]", tc.name, raw[i], v, lo, hi)
			}
		}
		if lo, hi := tc.cfg.Range(); lo != tc.lo || hi != tc.hi {
			t.Errorf("%s: range [%v, %v], want [%v, %v]", tc.name, lo, hi, tc.lo, tc.hi)
		}
		if !tc.cfg.Dequantize {
			tc.cfg.Restore(x)
			for i := range x {
				if math.Abs(float64(x[i]-raw[i])) > 1e-7 {
					t.Errorf("%s: Restore(Prepare(x)) = %v, want %v", tc.name, x, raw)
				}
			}
		}
	}
}

// Fill with flip gives each example or its mirror, a fair coin keyed by
// (seed, step, position); centring is 2x − 1 of the same batch without it.
func TestSamplerFlipAndCenter(t *testing.T) {
	ds := NewSynthetic(8, 3, 1, Train, 300)
	const batch = 200
	size := Size(ds)
	fill := func(seed uint64, cfg Config) []float32 {
		s, err := NewSampler(ds, batch, seed, cfg)
		if err != nil {
			t.Fatal(err)
		}
		x := make([]float32, batch*size)
		if err := s.Fill(7, 0, batch, x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	plain, flipped := fill(5, Config{}), fill(5, Config{Flip: true})
	ref, _ := NewSampler(ds, batch, 5, Config{})
	mirrored, asIs := 0, 0
	for j := 0; j < batch; j++ {
		ex := make([]float32, size)
		ds.Example(ref.Index(7, j), ex)
		if !slices.Equal(plain[j*size:(j+1)*size], ex) {
			t.Fatalf("position %d: plain fill is not the example", j)
		}
		got := flipped[j*size : (j+1)*size]
		switch {
		case slices.Equal(got, ex):
			asIs++
		default:
			Flip(ex, 3, 8, 8)
			if !slices.Equal(got, ex) {
				t.Fatalf("position %d: neither the example nor its mirror", j)
			}
			mirrored++
		}
	}
	// Symmetric shapes may equal their mirror; most synthetic ones do not.
	if mirrored < batch/4 || asIs < batch/4 {
		t.Errorf("%d mirrored, %d as is of %d: want about half each", mirrored, asIs, batch)
	}
	if again := fill(5, Config{Flip: true}); !slices.Equal(again, flipped) {
		t.Error("same seed, different flips")
	}
	if other := fill(6, Config{Flip: true}); slices.Equal(other, flipped) {
		t.Error("another seed, same flips")
	}
	deq, both := fill(5, Config{Dequantize: true, Flip: true}), fill(5, Config{Dequantize: true, Flip: true, Centered: true})
	for i := range deq {
		if both[i] != 2*deq[i]-1 {
			t.Fatalf("value %d: centred %v, want 2·%v − 1", i, both[i], deq[i])
		}
	}
	if _, err := NewSampler(indexSet(10), 4, 1, Config{Flip: true}); err == nil {
		t.Error("flip of 1-D examples accepted")
	}
}

func TestSubsample(t *testing.T) {
	ds := NewSynthetic(8, 1, 1, Train, 50)
	x, idx, err := Subsample(ds, 20, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) != 20 || len(x) != 20*Size(ds) {
		t.Fatalf("%d indices, %d values", len(idx), len(x))
	}
	seen := map[int]bool{}
	ex := make([]float32, Size(ds))
	for k, i := range idx {
		if seen[i] || i < 0 || i >= 50 {
			t.Fatalf("index %d repeated or out of range", i)
		}
		seen[i] = true
		ds.Example(i, ex)
		if !slices.Equal(ex, x[k*len(ex):(k+1)*len(ex)]) {
			t.Fatalf("example %d differs from ds.Example(%d)", k, i)
		}
	}
	_, again, _ := Subsample(ds, 20, 3)
	_, other, _ := Subsample(ds, 20, 4)
	if !slices.Equal(again, idx) || slices.Equal(other, idx) {
		t.Errorf("seed 3 twice: %v, %v; seed 4: %v", idx, again, other)
	}
	if _, all, _ := Subsample(ds, 500, 3); len(all) != 50 {
		t.Errorf("subsample of 500 from 50 took %d", len(all))
	}
	if _, _, err := Subsample(ds, 0, 3); err == nil {
		t.Error("subsample of 0 succeeded")
	}
}
