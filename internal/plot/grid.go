// Package plot renders what a run produces for people to look at: sample
// grids of images, 2-D samples as CSV and scatter plots, loss curves.
package plot

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ncsn/ncsn/internal/atomicfile"
)

// Grid lays out n images (each [C, H, W], C = 1 or 3, values in [0, 1],
// clamped) in rows of cols, with a 2-pixel border, scaled up by scale.
func Grid(x []float32, n, c, h, w, cols, scale int) (*image.RGBA, error) {
	if c != 1 && c != 3 {
		return nil, fmt.Errorf("plot: %d channels, want 1 or 3", c)
	}
	if n < 1 || len(x) != n*c*h*w || cols < 1 || scale < 1 {
		return nil, fmt.Errorf("plot: grid of %d images of %dx%dx%d from %d values", n, c, h, w, len(x))
	}
	cols = min(cols, n)
	rows := (n + cols - 1) / cols
	const pad = 2
	W, H := cols*(w*scale+pad)+pad, rows*(h*scale+pad)+pad
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = 0x40, 0x40, 0x40, 0xff
	}
	px := func(v float32) uint8 {
		if math.IsNaN(float64(v)) {
			return 0
		}
		return uint8(math.Round(float64(min(max(v, 0), 1)) * 255))
	}
	for k := 0; k < n; k++ {
		ox, oy := pad+(k%cols)*(w*scale+pad), pad+(k/cols)*(h*scale+pad)
		s := x[k*c*h*w : (k+1)*c*h*w]
		for yy := 0; yy < h; yy++ {
			for xx := 0; xx < w; xx++ {
				var col color.RGBA
				if c == 1 {
					g := px(s[yy*w+xx])
					col = color.RGBA{g, g, g, 255}
				} else {
					col = color.RGBA{px(s[yy*w+xx]), px(s[h*w+yy*w+xx]), px(s[2*h*w+yy*w+xx]), 255}
				}
				for dy := 0; dy < scale; dy++ {
					for dx := 0; dx < scale; dx++ {
						img.SetRGBA(ox+xx*scale+dx, oy+yy*scale+dy, col)
					}
				}
			}
		}
	}
	return img, nil
}

// WritePNG writes img to path atomically enough for a result file: a temp
// file renamed into place, so a reader never sees half an image.
func WritePNG(path string, img image.Image) error {
	return writeFile(path, func(w io.Writer) error { return png.Encode(w, img) })
}

// WriteCSV writes 2-D points (x, y pairs) with the header "x,y".
func WriteCSV(path string, xy []float32) error {
	if len(xy)%2 != 0 {
		return fmt.Errorf("plot: %d values are not x,y pairs", len(xy))
	}
	return writeFile(path, func(w io.Writer) error {
		b := bufio.NewWriter(w)
		b.WriteString("x,y\n")
		for i := 0; i < len(xy); i += 2 {
			b.WriteString(strconv.FormatFloat(float64(xy[i]), 'g', -1, 32))
			b.WriteByte(',')
			b.WriteString(strconv.FormatFloat(float64(xy[i+1]), 'g', -1, 32))
			b.WriteByte('\n')
		}
		return b.Flush()
	})
}

func writeFile(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := atomicfile.Write(path, 0o666, write); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}
