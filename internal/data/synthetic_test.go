package data

import (
	"math"
	"slices"
	"testing"
)

func TestSynthetic(t *testing.T) {
	tests := []struct {
		size, channels int
	}{
		{28, 1},
		{32, 3},
		{8, 1},
	}
	for _, tt := range tests {
		cfg := Config{Name: "synthetic", ImageSize: tt.size, Channels: tt.channels, TrainSize: 500, TestSize: 100}
		train, test, err := Open(cfg, 11)
		if err != nil {
			t.Fatal(err)
		}
		if want := []int{tt.channels, tt.size, tt.size}; !slices.Equal(train.Shape(), want) || !slices.Equal(test.Shape(), want) {
			t.Fatalf("Shape = %v, %v, want %v", train.Shape(), test.Shape(), want)
		}
		if train.Len() != 500 || test.Len() != 100 {
			t.Fatalf("Len = %d, %d", train.Len(), test.Len())
		}
		n := Size(train)
		a, b := make([]float32, n), make([]float32, n)
		var onFrac float64
		distinct := map[string]bool{}
		for i := range train.Len() {
			train.Example(i, a)
			train.Example(i, b)
			if !slices.Equal(a, b) {
				t.Fatalf("%d×%d: example %d not deterministic", tt.size, tt.channels, i)
			}
			on := 0
			for j, v := range a {
				if v < 0 || v > 1 {
					t.Fatalf("example %d pixel %d = %v outside [0, 1]", i, j, v)
				}
				if k := math.Round(float64(v) * 255); float32(k/255) != v {
					t.Fatalf("example %d pixel %d = %v is not a multiple of 1/255", i, j, v)
				}
				if v > 0 {
					on++
				}
			}
			if on == 0 {
				t.Fatalf("example %d is blank", i)
			}
			onFrac += float64(on) / float64(n)
			distinct[string(float32Bytes(a))] = true
		}
		// Shapes cover a visible part of the image but not all of it.
		if onFrac /= float64(train.Len()); onFrac < 0.03 || onFrac > 0.4 {
			t.Errorf("%d×%d: mean lit fraction %.3f", tt.size, tt.channels, onFrac)
		}
		if len(distinct) < train.Len()*9/10 {
			t.Errorf("%d×%d: only %d distinct images of %d", tt.size, tt.channels, len(distinct), train.Len())
		}
		for i := range 20 {
			train.Example(i, a)
			test.Example(i, b)
			if slices.Equal(a, b) {
				t.Errorf("train and test example %d are equal", i)
			}
		}
	}
}

// TestSyntheticShapes checks that each image is one recognisable shape: the
// lit pixels of a square or bar fill their bounding box, a disc fills about
// π/4 of it.
func TestSyntheticShapes(t *testing.T) {
	s := NewSynthetic(28, 1, 5, Train, 300)
	x := make([]float32, Size(s))
	var boxes, discs int
	for i := range s.Len() {
		s.Example(i, x)
		x0, y0, x1, y1, lit := 28, 28, -1, -1, 0
		var level float32
		for y := range 28 {
			for xx := range 28 {
				if v := x[y*28+xx]; v > 0 {
					if level != 0 && v != level {
						t.Fatalf("example %d has two intensities %v and %v", i, level, v)
					}
					level = v
					lit++
					x0, y0, x1, y1 = min(x0, xx), min(y0, y), max(x1, xx), max(y1, y)
				}
			}
		}
		if level < 0.49 {
			t.Errorf("example %d intensity %v, want >= 0.5", i, level)
		}
		fill := float64(lit) / float64((x1-x0+1)*(y1-y0+1))
		switch {
		case fill == 1:
			boxes++
		case fill > 0.6 && fill < 0.95:
			discs++
		default:
			t.Errorf("example %d fills %.2f of its bounding box", i, fill)
		}
	}
	// Squares and bars are 2 of 3 kinds.
	if boxes < 150 || discs < 60 {
		t.Errorf("%d boxes and %d discs of %d", boxes, discs, s.Len())
	}
}

func float32Bytes(x []float32) []byte {
	b := make([]byte, 0, 4*len(x))
	for _, v := range x {
		u := math.Float32bits(v)
		b = append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	return b
}
