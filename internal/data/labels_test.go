package data

import "testing"

// TestSyntheticLabels: the label is the shape Example draws — bars are long,
// squares fill their bounding box, discs leave its corners dark.
func TestSyntheticLabels(t *testing.T) {
	const size = 28
	s := NewSynthetic(size, 1, 3, Train, 300)
	if s.Classes() != 3 {
		t.Fatalf("%d classes, want 3", s.Classes())
	}
	img := make([]float32, size*size)
	var counts [3]int
	for i := 0; i < s.Len(); i++ {
		s.Example(i, img)
		x0, y0, x1, y1, lit := size, size, -1, -1, 0
		for p, v := range img {
			if v > 0 {
				x, y := p%size, p/size
				x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
				lit++
			}
		}
		w, h := float64(x1-x0+1), float64(y1-y0+1)
		fill, aspect := float64(lit)/(w*h), max(w, h)/min(w, h)
		l := s.Label(i)
		counts[l]++
		ok := false
		switch l {
		case 0:
			ok = img[y0*size+x0] == 0 && fill > 0.6 && aspect < 1.3
		case 1:
			ok = fill > 0.99 && aspect < 1.3
		case 2:
			ok = aspect >= 1.5
		}
		if !ok {
			t.Fatalf("example %d labelled %d: %vx%v box, fill %.2f", i, l, w, h, fill)
		}
	}
	for l, c := range counts {
		if c < 60 {
			t.Errorf("label %d on %d of 300 examples", l, c)
		}
	}
	if (&Images{}).Classes() != 10 {
		t.Error("file sets have 10 classes")
	}
}
