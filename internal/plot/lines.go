package plot

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
)

// Series is one named line of a Lines chart: y over the chart's x values,
// NaN where it has no value.
type Series struct {
	Name string
	Y    []float64
}

// seriesColours are the lines' colours, in order.
var seriesColours = []color.RGBA{blue, red, {44, 160, 44, 255}, {148, 103, 189, 255}}

// Lines plots series against x (ascending, e.g. training steps) on linear
// axes, each value marked and joined to the next, with a legend.
func Lines(title, xlabel, ylabel string, x []float64, series []Series) (*image.RGBA, error) {
	if len(x) == 0 || len(series) == 0 || len(series) > len(seriesColours) {
		return nil, fmt.Errorf("plot: %d points in %d series, want at least one point and 1..%d series", len(x), len(series), len(seriesColours))
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		if len(s.Y) != len(x) {
			return nil, fmt.Errorf("plot: series %q has %d values for %d x values", s.Name, len(s.Y), len(x))
		}
		for _, v := range s.Y {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 0) {
		return nil, fmt.Errorf("plot: no finite values to plot")
	}
	// Start the y axis at 0 for non-negative values (distances), and end
	// both ends on round numbers so that the ticks are round too.
	if lo >= 0 {
		lo = 0
	}
	step := niceStep(max(hi-lo, math.Abs(hi)*1e-6, 1e-12) / 5)
	lo, hi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	xmin, xmax := x[0], x[len(x)-1]
	if xmax == xmin {
		xmin, xmax = xmin-1, xmax+1
	}
	c := newChart(720, 420, title, xlabel, ylabel, xmin, xmax, lo, hi, false)
	for k, s := range series {
		col := seriesColours[k]
		prevX, prevY := -1, -1
		for i, v := range s.Y {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				prevX = -1
				continue
			}
			px, py := c.px(x[i]), c.py(v)
			for d := -2; d <= 2; d++ {
				c.line(px-2, py+d, px+2, py+d, col)
			}
			if prevX >= 0 {
				c.line(prevX, prevY, px, py, col)
			}
			prevX, prevY = px, py
		}
		ly := c.y0 + 14 + 16*k
		c.line(c.x1-150, ly-4, c.x1-130, ly-4, col)
		c.text(c.x1-124, ly, s.Name)
	}
	return c.img, nil
}

// Stack places images one above the other on a white background.
func Stack(imgs ...*image.RGBA) *image.RGBA {
	w, h := 0, 0
	for _, m := range imgs {
		w, h = max(w, m.Bounds().Dx()), h+m.Bounds().Dy()
	}
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(out, out.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	y := 0
	for _, m := range imgs {
		draw.Draw(out, image.Rect(0, y, m.Bounds().Dx(), y+m.Bounds().Dy()), m, m.Bounds().Min, draw.Src)
		y += m.Bounds().Dy()
	}
	return out
}

// niceStep is the smallest of 1, 2, 2.5 and 5 times a power of ten that is at least x.
func niceStep(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*p >= x*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}
