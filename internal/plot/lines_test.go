package plot

import (
	"image"
	"math"
	"strings"
	"testing"
)

// count is how many pixels of img have colour c.
func count(img *image.RGBA, c [3]uint8) int {
	n := 0
	for i := 0; i < len(img.Pix); i += 4 {
		if img.Pix[i] == c[0] && img.Pix[i+1] == c[1] && img.Pix[i+2] == c[2] {
			n++
		}
	}
	return n
}

func TestLines(t *testing.T) {
	steps := []float64{500, 1000, 1500, 2000}
	img, err := Lines("FID", "step", "FID", steps, []Series{
		{"samples", []float64{80, 40, math.NaN(), 20}},
		{"floor", []float64{2, 2, 2, 2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, r := count(img, [3]uint8{blue.R, blue.G, blue.B}), count(img, [3]uint8{red.R, red.G, red.B})
	if b < 50 || r < 50 {
		t.Fatalf("%d blue and %d red pixels: a series is missing", b, r)
	}
	// The first value (80, the largest) is marked near the top left of the plot area,
	// the floor (2) near the bottom.
	c := newChart(720, 420, "", "", "", 500, 2000, 0, 80, false) // 0…80 in round steps of 20
	if px := img.RGBAAt(c.px(500), c.py(80)); px != blue {
		t.Errorf("pixel at the first value is %v, want blue", px)
	}
	if px := img.RGBAAt(c.px(1000), c.py(2)); px != red {
		t.Errorf("pixel at the floor is %v, want red", px)
	}
	for _, c := range []struct{ x, want float64 }{{0.9, 1}, {1, 1}, {1.1, 2}, {2.2, 2.5}, {3, 5}, {6, 10}, {0.0031, 0.005}, {170, 200}} {
		if got := niceStep(c.x); math.Abs(got-c.want) > 1e-12*c.want {
			t.Errorf("niceStep(%v) = %v, want %v", c.x, got, c.want)
		}
	}
	one, err := Lines("t", "step", "d", []float64{7}, []Series{{"d", []float64{0.5}}})
	if err != nil || count(one, [3]uint8{blue.R, blue.G, blue.B}) == 0 {
		t.Errorf("one point: %v", err)
	}
	stacked := Stack(img, one)
	if stacked.Bounds().Dy() != 840 || stacked.RGBAAt(c.px(500), 420+c.py(80)) != one.RGBAAt(c.px(500), c.py(80)) {
		t.Errorf("stack of two 720×420 charts: %v", stacked.Bounds())
	}
	for _, bad := range []struct {
		x    []float64
		s    []Series
		want string
	}{
		{nil, []Series{{"a", nil}}, "at least one point"},
		{[]float64{1}, []Series{{"a", []float64{1, 2}}}, "has 2 values"},
		{[]float64{1}, []Series{{"a", []float64{math.NaN()}}}, "no finite"},
	} {
		if _, err := Lines("", "", "", bad.x, bad.s); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Lines(%v): %v, want %q", bad.x, err, bad.want)
		}
	}
}
