package plot

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Chart is a plot area with axes, ticks and labels, drawn on an RGBA image.
type chart struct {
	img                    *image.RGBA
	x0, y0, x1, y1         int // plot area in pixels
	xmin, xmax, ymin, ymax float64
	logY                   bool
}

var (
	white = color.RGBA{255, 255, 255, 255}
	black = color.RGBA{0, 0, 0, 255}
	grey  = color.RGBA{225, 225, 225, 255}
	blue  = color.RGBA{31, 119, 180, 255}
	red   = color.RGBA{214, 39, 40, 255}
)

func newChart(w, h int, title, xlabel, ylabel string, xmin, xmax, ymin, ymax float64, logY bool) *chart {
	c := &chart{img: image.NewRGBA(image.Rect(0, 0, w, h)), x0: 70, y0: 30, x1: w - 20, y1: h - 45,
		xmin: xmin, xmax: xmax, ymin: ymin, ymax: ymax, logY: logY}
	if logY {
		c.ymin, c.ymax = math.Log10(ymin), math.Log10(ymax)
	}
	if c.xmax <= c.xmin {
		c.xmax = c.xmin + 1
	}
	if c.ymax <= c.ymin {
		c.ymax = c.ymin + 1
	}
	draw.Draw(c.img, c.img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	nx, ny := divisions(c.xmax-c.xmin), divisions(c.ymax-c.ymin)
	for i := 0; i <= nx; i++ {
		fx := c.xmin + (c.xmax-c.xmin)*float64(i)/float64(nx)
		px := c.px(fx)
		c.vline(px, c.y0, c.y1, grey)
		c.text(px-3*len(tick(fx)), c.y1+16, tick(fx))
	}
	for i := 0; i <= ny; i++ {
		fy := c.ymin + (c.ymax-c.ymin)*float64(i)/float64(ny)
		py := c.y1 - int(float64(c.y1-c.y0)*float64(i)/float64(ny))
		c.hline(c.x0, c.x1, py, grey)
		label := fy
		if logY {
			label = math.Pow(10, fy)
		}
		c.text(c.x0-7*len(tick(label))-4, py+4, tick(label))
	}
	c.hline(c.x0, c.x1, c.y1, black)
	c.vline(c.x0, c.y0, c.y1, black)
	c.text((c.x0+c.x1)/2-7*len(title)/2, 18, title)
	c.text((c.x0+c.x1)/2-7*len(xlabel)/2, c.y1+36, xlabel)
	c.text(4, c.y0-8, ylabel)
	return c
}

// divisions picks 4…8 grid divisions of a range so that the ticks fall on
// round numbers where possible (16 → 4 steps of 4), else 5.
func divisions(span float64) int {
	for n := 4; n <= 8; n++ {
		step := span / float64(n)
		m := step / math.Pow(10, math.Floor(math.Log10(step)))
		for _, nice := range []float64{1, 2, 2.5, 5, 10} {
			if math.Abs(m-nice) < 1e-9 {
				return n
			}
		}
	}
	return 5
}

func tick(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1e5 || a < 1e-2:
		return strconv.FormatFloat(v, 'e', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func (c *chart) px(x float64) int {
	return c.x0 + int(math.Round((x-c.xmin)/(c.xmax-c.xmin)*float64(c.x1-c.x0)))
}

func (c *chart) py(y float64) int {
	if c.logY {
		y = math.Log10(y)
	}
	return c.y1 - int(math.Round((y-c.ymin)/(c.ymax-c.ymin)*float64(c.y1-c.y0)))
}

func (c *chart) inside(x, y int) bool { return x >= c.x0 && x <= c.x1 && y >= c.y0 && y <= c.y1 }

func (c *chart) hline(x0, x1, y int, col color.RGBA) {
	for x := x0; x <= x1; x++ {
		c.img.SetRGBA(x, y, col)
	}
}

func (c *chart) vline(x, y0, y1 int, col color.RGBA) {
	for y := y0; y <= y1; y++ {
		c.img.SetRGBA(x, y, col)
	}
}

func (c *chart) text(x, y int, s string) {
	d := font.Drawer{Dst: c.img, Src: image.NewUniform(black), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// line draws a segment (Bresenham), clipped to the plot area.
func (c *chart) line(ax, ay, bx, by int, col color.RGBA) {
	dx, dy := abs(bx-ax), -abs(by-ay)
	sx, sy := sign(bx-ax), sign(by-ay)
	e := dx + dy
	for {
		if c.inside(ax, ay) {
			c.img.SetRGBA(ax, ay, col)
		}
		if ax == bx && ay == by {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			ax += sx
		} else {
			e += dx
			ay += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

// Scatter plots 2-D points (x, y pairs) over the box [lo, hi]², with optional
// marked centres (e.g. a mixture's means).
func Scatter(xy []float32, lo, hi float64, title string, centres [][]float64) (*image.RGBA, error) {
	if len(xy)%2 != 0 {
		return nil, fmt.Errorf("plot: %d values are not x,y pairs", len(xy))
	}
	c := newChart(560, 560, title, "x", "y", lo, hi, lo, hi, false)
	for i := 0; i < len(xy); i += 2 {
		px, py := c.px(float64(xy[i])), c.py(float64(xy[i+1]))
		for d := 0; d < 4; d++ {
			if x, y := px+d%2, py+d/2; c.inside(x, y) {
				c.img.SetRGBA(x, y, blue)
			}
		}
	}
	for _, m := range centres {
		px, py := c.px(m[0]), c.py(m[1])
		c.line(px-6, py, px+6, py, red)
		c.line(px, py-6, px, py+6, red)
	}
	return c.img, nil
}

// LossCurve plots a loss per step on a log scale, with a moving average so the
// trend shows through DSM's noisy small-σ terms.
func LossCurve(loss []float64, title string) (*image.RGBA, error) {
	var lo, hi = math.Inf(1), math.Inf(-1)
	for _, v := range loss {
		if v > 0 && !math.IsInf(v, 0) {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if len(loss) == 0 || math.IsInf(lo, 0) {
		return nil, fmt.Errorf("plot: no positive loss values to plot")
	}
	c := newChart(720, 420, title, "step", "loss", 0, float64(len(loss)), lo, hi*1.05, true)
	window := max(1, len(loss)/50)
	var sum float64
	prevX, prevY := -1, -1
	for i, v := range loss {
		if v > 0 {
			c.img.SetRGBA(c.px(float64(i+1)), c.py(v), grey)
		}
		sum += v
		if i >= window {
			sum -= loss[i-window]
		}
		avg := sum / float64(min(i+1, window))
		if avg <= 0 {
			continue
		}
		x, y := c.px(float64(i+1)), c.py(avg)
		if prevX >= 0 {
			c.line(prevX, prevY, x, y, blue)
		}
		prevX, prevY = x, y
	}
	return c.img, nil
}
