package imageset

import (
	"bytes"
	"image"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/keyrand"
	"github.com/ncsn/ncsn/internal/npy"
	"github.com/ncsn/ncsn/internal/plot"
)

// levels draws n images of the given size as 8-bit levels in [0, 1], so that
// a PNG holds them exactly.
func levels(key uint64, n, size int) []float32 {
	r := keyrand.New(key)
	x := make([]float32, n*size)
	for i := range x {
		x[i] = float32(r.IntN(256)) / 255
	}
	return x
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// torchGrid lays gray images out as shared/bench/torch_ref.py's
// write_png_grid does: 8 columns, 2-pixel borders of 64, scale 1, 8-bit gray.
func torchGrid(x []float32, n, h, w int) *image.Gray {
	const cols, pad = 8, 2
	rows := (n + cols - 1) / cols
	g := image.NewGray(image.Rect(0, 0, cols*(w+pad)+pad, rows*(h+pad)+pad))
	for i := range g.Pix {
		g.Pix[i] = 64
	}
	for i := 0; i < n; i++ {
		r, c := i/cols, i%cols
		for y := 0; y < h; y++ {
			for xx := 0; xx < w; xx++ {
				g.Pix[(pad+r*(h+pad)+y)*g.Stride+pad+c*(w+pad)+xx] = uint8(math.Min(255, math.Max(0, float64(x[i*h*w+y*w+xx])*255+0.5)))
			}
		}
	}
	return g
}

func TestDecodeGrid(t *testing.T) {
	gray := levels(1, 11, 28*28)
	rgb := levels(2, 5, 3*32*32)
	ncsnGrid := func(x []float32, n, c, h, w, cols int) []byte {
		img, err := plot.Grid(x, n, c, h, w, cols, max(2, 64/max(h, w)))
		if err != nil {
			t.Fatal(err)
		}
		return encodePNG(t, img)
	}
	for _, c := range []struct {
		name  string
		png   []byte
		shape []int
		want  []float32
	}{
		// 11 images in rows of 4: the last row ends with an empty cell.
		{"ncsn gray, scaled, short last row", ncsnGrid(gray, 11, 1, 28, 28, 4), []int{1, 28, 28}, gray},
		{"ncsn colour", ncsnGrid(rgb, 5, 3, 32, 32, 3), []int{3, 32, 32}, rgb},
		{"torch_ref.py gray, 8 columns", encodePNG(t, torchGrid(gray, 11, 28, 28)), []int{1, 28, 28}, gray},
		{"one image", ncsnGrid(gray[:784], 1, 1, 28, 28, 1), []int{1, 28, 28}, gray[:784]},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodeGrid(c.png, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			if size := c.shape[0] * c.shape[1] * c.shape[2]; len(got) != len(c.want) {
				t.Fatalf("%d images, want %d", len(got)/size, len(c.want)/size)
			}
			for i := range got {
				if math.Abs(float64(got[i]-c.want[i])) > 1e-6 {
					t.Fatalf("value %d: %v, want %v", i, got[i], c.want[i])
				}
			}
		})
	}
	for _, bad := range []struct {
		name  string
		png   []byte
		shape []int
		want  string
	}{
		{"wrong cell size", ncsnGrid(gray, 11, 1, 28, 28, 4), []int{1, 32, 32}, "not a grid of 32x32"},
		{"not a PNG", []byte("GIF89a"), []int{1, 28, 28}, "not a PNG"},
		{"no borders", encodePNG(t, image.NewGray(image.Rect(0, 0, 62, 62))), []int{1, 28, 28}, "grey borders"},
		{"points", ncsnGrid(gray[:784], 1, 1, 28, 28, 1), []int{2}, "1 or 3 channels"},
	} {
		if _, err := DecodeGrid(bad.png, bad.shape); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want %q", bad.name, err, bad.want)
		}
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	x := levels(3, 4, 28*28)
	shape := []int{1, 28, 28}
	write := func(name string, shape []int, v []float32) string {
		p := filepath.Join(dir, name)
		if err := npy.WriteFile(p, shape, v); err != nil {
			t.Fatal(err)
		}
		return p
	}
	nchw := write("a.npy", []int{4, 1, 28, 28}, x)
	nhw := write("b.npy", []int{4, 28, 28}, x)
	grid := filepath.Join(dir, "g.png")
	img, _ := plot.Grid(x, 4, 1, 28, 28, 2, 2)
	plot.WritePNG(grid, img)
	folder := filepath.Join(dir, "pngs")
	os.Mkdir(folder, 0o755)
	for i, name := range []string{"0.png", "1.png", "2.png", "3.png"} {
		one, _ := plot.Grid(x[i*784:(i+1)*784], 1, 1, 28, 28, 1, 1)
		// A single image is the cell without its border.
		os.WriteFile(filepath.Join(folder, name), encodePNG(t, one.SubImage(image.Rect(2, 2, 30, 30))), 0o644)
	}
	os.WriteFile(filepath.Join(folder, "notes.txt"), []byte("not an image"), 0o644)
	for _, p := range []string{nchw, nhw, grid, folder} {
		got, err := Read(p, shape)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if len(got) != len(x) {
			t.Fatalf("%s: %d values, want %d", p, len(got), len(x))
		}
		for i := range got {
			if math.Abs(float64(got[i]-x[i])) > 1e-6 {
				t.Fatalf("%s: value %d is %v, want %v", p, i, got[i], x[i])
			}
		}
	}
	pts := write("p.npy", []int{3, 2}, []float32{1, 2, 3, 4, 5, 6})
	if got, err := Read(pts, []int{2}); err != nil || len(got) != 6 {
		t.Errorf("points: %v, %v", got, err)
	}
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	for _, bad := range []struct {
		path  string
		shape []int
		want  string
	}{
		{nchw, []int{3, 28, 28}, "want [N 3 28 28]"},
		{pts, shape, "shape [3 2]"},
		{grid, []int{2}, "points"},
		{empty, shape, "no *.png"},
		{filepath.Join(dir, "x.gif"), shape, "no such file"},
		{nchw + ".txt", shape, "no such file"},
	} {
		if _, err := Read(bad.path, bad.shape); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s %v: %v, want %q", bad.path, bad.shape, err, bad.want)
		}
	}
	os.WriteFile(filepath.Join(dir, "s.csv"), []byte("x,y\n"), 0o644)
	if _, err := Read(filepath.Join(dir, "s.csv"), []int{2}); err == nil || !strings.Contains(err.Error(), "FILE.npy") {
		t.Errorf("csv: %v", err)
	}
	big := filepath.Join(folder, "big.png")
	os.WriteFile(big, encodePNG(t, image.NewGray(image.Rect(0, 0, 30, 28))), 0o644)
	if _, err := Read(folder, shape); err == nil || !strings.Contains(err.Error(), "not one 28x28 image") {
		t.Errorf("odd-sized PNG in the folder: %v", err)
	}
}

// TestTorchRefGrid reads a grid written by the code of torch_ref.py's
// write_png_grid, run by python3 with numpy (skipped without them).
func TestTorchRefGrid(t *testing.T) {
	// Debian's python3 has numpy; one found first on PATH may not.
	py, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Skip("no python3")
		}
	}
	if out, err := exec.Command(py, "-c", "import numpy").CombinedOutput(); err != nil {
		t.Skipf("no numpy: %s", out)
	}
	dir := t.TempDir()
	x := levels(5, 10, 28*28)
	src := filepath.Join(dir, "x.npy")
	if err := npy.WriteFile(src, []int{10, 1, 28, 28}, x); err != nil {
		t.Fatal(err)
	}
	// write_png_grid as in shared/bench/torch_ref.py.
	const script = `
import struct, sys, zlib
import numpy as np
def write_png_grid(path, imgs, cols=8, pad=2):
    n, _, h, w = imgs.shape
    rows = (n + cols - 1) // cols
    H, W = rows * (h + pad) + pad, cols * (w + pad) + pad
    g = np.full((H, W), 64, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        g[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = (imgs[i, 0] * 255 + 0.5).clip(0, 255)
    raw = b"".join(b"\x00" + g[y].tobytes() for y in range(H))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 0, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
write_png_grid(sys.argv[2], np.load(sys.argv[1]))
`
	dst := filepath.Join(dir, "grid.png")
	if out, err := exec.Command(py, "-c", script, src, dst).CombinedOutput(); err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	got, err := Read(dst, []int{1, 28, 28})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(x) {
		t.Fatalf("%d images, want 10", len(got)/784)
	}
	for i := range got {
		if math.Abs(float64(got[i]-x[i])) > 1e-6 {
			t.Fatalf("value %d: %v, want %v", i, got[i], x[i])
		}
	}
}

// FuzzDecodeGrid: the PNG decoders never panic, and what they return is
// whole images with values in [0, 1].
func FuzzDecodeGrid(f *testing.F) {
	img, _ := plot.Grid(levels(6, 3, 64), 3, 1, 8, 8, 2, 2)
	f.Add(encodePNG(f, img), false)
	f.Add(encodePNG(f, torchGrid(levels(7, 9, 64), 9, 8, 8)), false)
	f.Add(encodePNG(f, img.SubImage(image.Rect(2, 2, 18, 18))), true)
	f.Fuzz(func(t *testing.T, b []byte, single bool) {
		decode := DecodeGrid
		if single {
			decode = DecodeImage
		}
		x, err := decode(b, []int{1, 8, 8})
		if err != nil {
			return
		}
		if len(x) == 0 || len(x)%64 != 0 {
			t.Fatalf("%d values are not whole 8x8 images", len(x))
		}
		for _, v := range x {
			if !(v >= 0 && v <= 1) {
				t.Fatalf("value %v outside [0, 1]", v)
			}
		}
	})
}
