// Package imageset reads sets of images from files, whoever wrote them: NumPy
// .npy arrays, PNG grids as ncsn sample and shared/bench/torch_ref.py write
// them, and folders of single PNGs. It is how `ncsn eval --samples` takes
// samples from other programs.
package imageset

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ncsn/ncsn/internal/npy"
)

// Layout of the PNG grids that `ncsn sample` and shared/bench/torch_ref.py
// write: cells separated and surrounded by gridPad pixels of grey gridBackground,
// each image scaled up by a whole factor (1 for torch_ref.py).
const (
	gridPad        = 2
	gridBackground = 0x40
	maxGridScale   = 16
	// maxPNGPixels bounds the images read: the header alone must not decide
	// how much memory decoding takes.
	maxPNGPixels = 1 << 26
)

// Read reads a set of images of shape [C, H, W] from path, returning
// N×C·H·W values:
//   - FILE.npy: float32, float64 or uint8 [N, C, H, W] (or [N, H, W] when C = 1)
//     in [0, 1], as `ncsn sample --out FILE.npy` and torch_ref.py write;
//   - GRID.png: a grid as `ncsn sample` and torch_ref.py write (any scale);
//   - a folder: every *.png in it, in name order, each one image of H×W (or a
//     whole multiple).
//
// For 2-D points (shape [D]) it reads FILE.npy of shape [N, D].
func Read(path string, shape []int) ([]float32, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("imageset: %w", err)
	}
	if st.IsDir() {
		if len(shape) != 3 {
			return nil, fmt.Errorf("imageset: %s is a folder: folders hold images, and this data set has points of shape %v (give FILE.npy)", path, shape)
		}
		return readFolder(path, shape)
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".npy":
		return readNpy(path, shape)
	case ".png":
		if len(shape) != 3 {
			return nil, fmt.Errorf("imageset: %s: a PNG holds images, and this data set has points of shape %v (give FILE.npy)", path, shape)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("imageset: %w", err)
		}
		x, err := DecodeGrid(b, shape)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return x, nil
	}
	return nil, fmt.Errorf("imageset: %s: want FILE.npy, GRID.png or a folder of PNGs", path)
}

func readNpy(path string, shape []int) ([]float32, error) {
	got, x, err := npy.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("imageset: %w", err)
	}
	ok := len(got) == 1+len(shape) && slices.Equal(got[1:], shape)
	if len(shape) == 3 && shape[0] == 1 && len(got) == 3 && slices.Equal(got[1:], shape[1:]) {
		ok = true
	}
	if !ok || got[0] < 1 {
		want := fmt.Sprintf("[N %s]", strings.Trim(fmt.Sprint(shape), "[]"))
		return nil, fmt.Errorf("imageset: %s holds an array of shape %v, want %s for this data set", path, got, want)
	}
	return x, nil
}

func readFolder(dir string, shape []int) ([]float32, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("imageset: %w", err)
	}
	var x []float32
	n := 0
	for _, e := range ents {
		if e.IsDir() || strings.ToLower(filepath.Ext(e.Name())) != ".png" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("imageset: %w", err)
		}
		img, err := DecodeImage(b, shape)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, e.Name()), err)
		}
		x = append(x, img...)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("imageset: no *.png files in %s", dir)
	}
	return x, nil
}

// decodePNG decodes a PNG after checking its size.
func decodePNG(b []byte) (*pixels, error) {
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("imageset: not a PNG: %w", err)
	}
	if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > maxPNGPixels/cfg.Height {
		return nil, fmt.Errorf("imageset: PNG of %dx%d pixels, want at most %d pixels", cfg.Width, cfg.Height, maxPNGPixels)
	}
	img, err := png.Decode(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		return nil, fmt.Errorf("imageset: PNG: %w", err)
	}
	return newPixels(img), nil
}

// pixels is a decoded image as 8-bit RGB.
type pixels struct {
	w, h int
	rgb  []uint8
}

func newPixels(img image.Image) *pixels {
	b := img.Bounds()
	p := &pixels{w: b.Dx(), h: b.Dy(), rgb: make([]uint8, 3*b.Dx()*b.Dy())}
	// 8-bit gray and RGBA, what the two writers produce, skip the colour
	// model's interface calls.
	at := func(x, y int) (r, g, b uint8) {
		c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
		return c.R, c.G, c.B
	}
	switch m := img.(type) {
	case *image.Gray:
		at = func(x, y int) (r, g, b uint8) { v := m.GrayAt(x, y).Y; return v, v, v }
	case *image.RGBA:
		at = func(x, y int) (r, g, b uint8) { c := m.RGBAAt(x, y); return c.R, c.G, c.B }
	}
	i := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			p.rgb[i], p.rgb[i+1], p.rgb[i+2] = at(x, y)
			i += 3
		}
	}
	return p
}

// cell writes the image of c channels, h×w pixels each drawn as s×s blocks
// with its top-left corner at (x0, y0), into dst (channel-first, in [0, 1]):
// block means, and for one channel the mean of red, green and blue.
func (p *pixels) cell(dst []float32, c, h, w, s, x0, y0 int) {
	// Dividing (not multiplying by a reciprocal) keeps 255 at exactly 1 and
	// level k at float32(k)/255, the data sets' own value.
	full := float32(255 * s * s)
	for yy := 0; yy < h; yy++ {
		for xx := 0; xx < w; xx++ {
			var sum [3]int
			for dy := 0; dy < s; dy++ {
				row := ((y0+yy*s+dy)*p.w + x0 + xx*s) * 3
				for dx := 0; dx < s; dx++ {
					o := row + 3*dx
					sum[0] += int(p.rgb[o])
					sum[1] += int(p.rgb[o+1])
					sum[2] += int(p.rgb[o+2])
				}
			}
			switch {
			case c == 1 && sum[0] == sum[1] && sum[1] == sum[2]:
				dst[yy*w+xx] = float32(sum[0]) / full
			case c == 1:
				dst[yy*w+xx] = float32(sum[0]+sum[1]+sum[2]) / (3 * full)
			default:
				for ch := 0; ch < 3; ch++ {
					dst[ch*h*w+yy*w+xx] = float32(sum[ch]) / full
				}
			}
		}
	}
}

// background reports whether the rectangle [x0, x1)×[y0, y1) is all grid background.
func (p *pixels) background(x0, y0, x1, y1 int) bool {
	for y := y0; y < y1; y++ {
		for _, v := range p.rgb[(y*p.w+x0)*3 : (y*p.w+x1)*3] {
			if v != gridBackground {
				return false
			}
		}
	}
	return true
}

// checkImageShape accepts the image shapes of the data sets: 1 or 3 channels.
func checkImageShape(shape []int) error {
	if len(shape) != 3 || (shape[0] != 1 && shape[0] != 3) || shape[1] < 1 || shape[2] < 1 {
		return fmt.Errorf("imageset: PNGs hold images of 1 or 3 channels, not shape %v", shape)
	}
	return nil
}

// DecodeGrid reads the images of shape [C, H, W] from a PNG grid as `ncsn
// sample` and torch_ref.py write them: cells of H×W pixels scaled by a whole
// factor, 2 pixels of grey between and around them, filled row by row. Empty
// cells at the end of the last row are not images.
func DecodeGrid(b []byte, shape []int) ([]float32, error) {
	if err := checkImageShape(shape); err != nil {
		return nil, err
	}
	p, err := decodePNG(b)
	if err != nil {
		return nil, err
	}
	c, h, w := shape[0], shape[1], shape[2]
	for s := 1; s <= maxGridScale; s++ {
		cw, ch := w*s+gridPad, h*s+gridPad
		if (p.w-gridPad)%cw != 0 || (p.h-gridPad)%ch != 0 || p.w < cw+gridPad || p.h < ch+gridPad {
			continue
		}
		cols, rows := (p.w-gridPad)/cw, (p.h-gridPad)/ch
		if !gridLines(p, cols, rows, cw, ch) {
			continue
		}
		n := cols * rows
		// Trailing empty cells are padding of the last row.
		for n > 1 {
			x0, y0 := gridPad+((n-1)%cols)*cw, gridPad+((n-1)/cols)*ch
			if !p.background(x0, y0, x0+w*s, y0+h*s) {
				break
			}
			n--
		}
		x := make([]float32, n*c*h*w)
		for i := 0; i < n; i++ {
			p.cell(x[i*c*h*w:(i+1)*c*h*w], c, h, w, s, gridPad+(i%cols)*cw, gridPad+(i/cols)*ch)
		}
		return x, nil
	}
	return nil, fmt.Errorf("imageset: a %dx%d PNG is not a grid of %dx%d images with %d-pixel grey borders (as ncsn sample and torch_ref.py write)", p.w, p.h, h, w, gridPad)
}

// gridLines reports whether the borders between and around the cells are background.
func gridLines(p *pixels, cols, rows, cw, ch int) bool {
	for i := 0; i <= cols; i++ {
		if !p.background(i*cw, 0, i*cw+gridPad, p.h) {
			return false
		}
	}
	for j := 0; j <= rows; j++ {
		if !p.background(0, j*ch, p.w, j*ch+gridPad) {
			return false
		}
	}
	return true
}

// DecodeImage reads one image of shape [C, H, W] from a PNG of H×W pixels,
// or of a whole multiple of that (each pixel drawn as a block).
func DecodeImage(b []byte, shape []int) ([]float32, error) {
	if err := checkImageShape(shape); err != nil {
		return nil, err
	}
	p, err := decodePNG(b)
	if err != nil {
		return nil, err
	}
	c, h, w := shape[0], shape[1], shape[2]
	s := p.w / w
	if s < 1 || p.w != s*w || p.h != s*h {
		return nil, fmt.Errorf("imageset: a %dx%d PNG is not one %dx%d image (or a whole multiple)", p.w, p.h, h, w)
	}
	x := make([]float32, c*h*w)
	p.cell(x, c, h, w, s, 0, 0)
	return x, nil
}
