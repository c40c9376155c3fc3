package samples

import (
	"context"
	"image"
	"image/color"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/npy"
	"github.com/ncsn/ncsn/internal/plot"
)

func countKnown(k []bool) int {
	n := 0
	for _, v := range k {
		if v {
			n++
		}
	}
	return n
}

func TestMaskKinds(t *testing.T) {
	rc, _ := smallRun(t, data.NameSynthetic, 3)
	dir := t.TempDir()
	// A file mask: known where x+y is even (a fine checkerboard).
	hw := make([]float32, 64)
	grey := image.NewGray(image.Rect(0, 0, 8, 8))
	for p := range hw {
		if (p%8+p/8)%2 == 0 {
			hw[p] = 1
			grey.Pix[p] = 255
		}
	}
	chw := make([]float32, 3*64)
	copy(chw[64:], hw) // only the green channel known
	write := func(name string, shape []int, v []float32) string {
		p := filepath.Join(dir, name)
		if err := npy.WriteFile(p, shape, v); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pngMask := filepath.Join(dir, "m.png")
	if err := plot.WritePNG(pngMask, grey); err != nil {
		t.Fatal(err)
	}
	checker := func(_, y, x int) bool { return (x+y)%2 == 0 }
	for _, tc := range []struct {
		spec  string
		known func(c, y, x int) bool // nil: random
	}{
		{"half", func(_, _, x int) bool { return x < 4 }},
		{"quarter", func(_, y, x int) bool { return x < 4 || y < 4 }},
		{"random", nil},
		{write("hw.npy", []int{8, 8}, hw), checker},
		{write("chw.npy", []int{3, 8, 8}, chw), func(c, y, x int) bool { return c == 1 && (x+y)%2 == 0 }},
		{pngMask, checker},
	} {
		const n = 3
		m, err := Mask(tc.spec, rc, n, 5)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		if len(m) != n*192 {
			t.Fatalf("%s: %d mask values for 3 images of 3×8×8", tc.spec, len(m))
		}
		if tc.known == nil {
			// Each pixel known with probability 1/2, all channels alike, a new draw per image, fixed by the seed.
			for i := 0; i < n; i++ {
				img := m[i*192 : (i+1)*192]
				if !slices.Equal(img[:64], img[64:128]) || !slices.Equal(img[:64], img[128:]) {
					t.Fatalf("random: channels of image %d differ", i)
				}
				if k := countKnown(img[:64]); k < 16 || k > 48 {
					t.Fatalf("random: %d of 64 pixels known in image %d, want about 32", k, i)
				}
			}
			if slices.Equal(m[:192], m[192:384]) {
				t.Fatal("random: images 0 and 1 have the same mask")
			}
			again, _ := Mask("random", rc, n, 5)
			other, _ := Mask("random", rc, n, 6)
			if !slices.Equal(m, again) || slices.Equal(m, other) {
				t.Fatal("random: the mask is not fixed by the seed")
			}
			continue
		}
		for i := 0; i < n; i++ {
			for c := 0; c < 3; c++ {
				for y := 0; y < 8; y++ {
					for x := 0; x < 8; x++ {
						if got := m[i*192+c*64+y*8+x]; got != tc.known(c, y, x) {
							t.Fatalf("%s: image %d channel %d pixel (%d,%d) known = %v", filepath.Base(tc.spec), i, c, x, y, got)
						}
					}
				}
			}
		}
	}
	allKnown := make([]float32, 64)
	for i := range allKnown {
		allKnown[i] = 1
	}
	for _, tc := range []struct{ spec, want string }{
		{write("big.npy", []int{9, 8}, make([]float32, 72)), "want [8 8] (H×W) or [3 8 8]"},
		{write("four.npy", []int{1, 3, 8, 8}, make([]float32, 192)), "has shape [1 3 8 8]"},
		{write("half.npy", []int{8, 8}, append([]float32{0.5}, make([]float32, 63)...)), "want 0 (unknown) or 1 (known)"},
		{write("all.npy", []int{8, 8}, allKnown), "nothing to inpaint"},
		{filepath.Join(dir, "none.png"), "no such file"},
		{"left", "want half, quarter, random"},
	} {
		if _, err := Mask(tc.spec, rc, 1, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mask %s: %v, want an error saying %q", filepath.Base(tc.spec), err, tc.want)
		}
	}
}

func TestLoadImages(t *testing.T) {
	rc, _ := smallRun(t, data.NameSynthetic, 1)
	_, test, err := data.Open(rc.Data, rc.Run.Seed)
	if err != nil {
		t.Fatal(err)
	}
	held := make([]float32, 3*64)
	for i := 0; i < 3; i++ {
		test.Example(2+i, held[i*64:(i+1)*64])
	}
	dir := t.TempDir()
	write := func(name string, shape []int, v []float32) string {
		p := filepath.Join(dir, name)
		if err := npy.WriteFile(p, shape, v); err != nil {
			t.Fatal(err)
		}
		return p
	}
	g := image.NewGray(image.Rect(0, 0, 8, 8))
	for p := range g.Pix {
		g.Pix[p] = uint8(4 * p)
	}
	grey := make([]float32, 64)
	for p := range grey {
		grey[p] = float32(4*p) / 255
	}
	single := filepath.Join(dir, "one.png")
	if err := plot.WritePNG(single, g); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec string
		want []float32
	}{
		{"test:2-4", held},
		{"test:3", held[64:128]},
		{write("nchw.npy", []int{3, 1, 8, 8}, held), held},
		{write("nhw.npy", []int{3, 8, 8}, held), held},
		{write("chw.npy", []int{1, 8, 8}, held[:64]), held[:64]},
		{single, grey},
	} {
		x, n, err := LoadImages(tc.spec, rc)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		if n != len(tc.want)/64 || !slices.Equal(x, tc.want) {
			t.Fatalf("%s: %d images %v, want %v", tc.spec, n, x, tc.want)
		}
	}
	// A grid as `ncsn sample` writes it reads back as its images.
	grid := filepath.Join(dir, "grid.png")
	if err := Write(grid, rc, held); err != nil {
		t.Fatal(err)
	}
	x, n, err := LoadImages(grid, rc)
	if err != nil || n != 3 {
		t.Fatalf("grid: %d images, %v", n, err)
	}
	for i := range x {
		if d := x[i] - held[i]; d > 0.5/255 || d < -0.5/255 {
			t.Fatalf("grid: value %d is %v, want %v to 8 bits", i, x[i], held[i])
		}
	}
	big := image.NewRGBA(image.Rect(0, 0, 16, 8))
	bigPNG := filepath.Join(dir, "big.png")
	if err := plot.WritePNG(bigPNG, big); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ spec, want string }{
		{"test:39-40", "has 40 images"},
		{"test:4-2", "0 <= I <= J"},
		{"test:x", "test:I-J"},
		{bigPNG, "neither one 8×8 image"},
		{write("rgb.npy", []int{2, 3, 8, 8}, make([]float32, 384)), "want [N 1 8 8]"},
		{write("range.npy", []int{1, 8, 8}, append([]float32{1.5}, make([]float32, 63)...)), "outside [0, 1]"},
		{"x.jpg", "want FILE.npy, FILE.png, a folder of PNGs or test:I-J"},
	} {
		if _, _, err := LoadImages(tc.spec, rc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", filepath.Base(tc.spec), err, tc.want)
		}
	}
	pts, _ := smallRun(t, data.NameGMM, 0)
	if _, _, err := LoadImages("test:0", pts); err == nil || !strings.Contains(err.Error(), "needs an image dataset") {
		t.Errorf("inpainting 2-D points: %v", err)
	}
}

// Inpaint's output holds k completions per image, image by image; each keeps
// its image's known pixels exactly and fills the others, differently per
// completion. The PNG grid has a row per image: masked input, completions,
// original.
func TestInpaintKeepsKnownPixels(t *testing.T) {
	rc, params := smallRun(t, data.NameSynthetic, 1)
	images, n, err := LoadImages("test:0-2", rc)
	if err != nil {
		t.Fatal(err)
	}
	for _, mask := range []string{"half", "random"} {
		known, err := Mask(mask, rc, n, 3)
		if err != nil {
			t.Fatal(err)
		}
		const k, d = 4, 64
		o := quick(0)
		o.Batch = 5 // batches that cut across images
		x, err := Inpaint(context.Background(), rc, params, images, known, k, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(x) != n*k*d {
			t.Fatalf("%s: %d values for %d images × %d completions", mask, len(x), n, k)
		}
		for i := 0; i < n; i++ {
			for j := 0; j < k; j++ {
				c := x[(i*k+j)*d : (i*k+j+1)*d]
				for p := 0; p < d; p++ {
					if known[i*d+p] && c[p] != images[i*d+p] {
						t.Fatalf("%s: completion %d of image %d: known pixel %d is %v, the image has %v", mask, j, i, p, c[p], images[i*d+p])
					}
				}
				if j > 0 {
					prev := x[(i*k+j-1)*d : (i*k+j)*d]
					for p := 0; p < d; p++ {
						if !known[i*d+p] && c[p] == prev[p] {
							t.Fatalf("%s: completions %d and %d of image %d agree at unknown pixel %d", mask, j-1, j, i, p)
						}
					}
				}
			}
		}
		path := filepath.Join(t.TempDir(), "grid.png")
		if err := WriteInpainting(path, rc, images, known, x, k); err != nil {
			t.Fatal(err)
		}
		// 8×8 images scaled ×8 in cells of 66 pixels, 2-pixel border: k+2 columns, n rows.
		w, h, at := readPNGFile(t, path)
		if w != (k+2)*66+2 || h != n*66+2 {
			t.Fatalf("%s: grid %d×%d, want %d×%d", mask, w, h, (k+2)*66+2, n*66+2)
		}
		level := func(v float32) uint8 { return uint8(min(max(v, 0), 1)*255 + 0.5) }
		for i := 0; i < n; i++ {
			for p := 0; p < d; p++ {
				y, xx := 2+i*66+p/8*8, 2+p%8*8
				in, orig := at(xx, y), at(xx+(k+1)*66, y)
				if orig != level(images[i*d+p]) {
					t.Fatalf("%s: row %d, last cell pixel %d is %d, the original has %d", mask, i, p, orig, level(images[i*d+p]))
				}
				want := level(images[i*d+p])
				if !known[i*d+p] {
					want = level(0.35 + 0.3*float32((p/8/2+p%8/2)%2)) // the checkerboard
				}
				if in != want {
					t.Fatalf("%s: row %d, masked input pixel %d is %d, want %d", mask, i, p, in, want)
				}
				if got, want := at(xx+66, y), level(x[i*k*d+p]); got != want {
					t.Fatalf("%s: row %d, first completion pixel %d is %d, want %d", mask, i, p, got, want)
				}
			}
		}
	}
	known, _ := Mask("half", rc, n, 1)
	if _, err := Inpaint(context.Background(), rc, params, images, known, 0, quick(0)); err == nil {
		t.Fatal("0 completions per image accepted")
	}
	o := quick(0)
	o.Sampler = "langevin"
	if _, err := Inpaint(context.Background(), rc, params, images, known, 1, o); err == nil || !strings.Contains(err.Error(), "annealed") {
		t.Fatalf("inpainting with plain Langevin: %v", err)
	}
}

// A colour PNG is read as the three channels of a colour dataset.
func TestLoadImagesColour(t *testing.T) {
	rc, _ := smallRun(t, data.NameSynthetic, 3)
	img := image.NewNRGBA(image.Rect(0, 0, 8, 8))
	for p := 0; p < 64; p++ {
		img.SetNRGBA(p%8, p/8, color.NRGBA{uint8(p), 100, 255 - uint8(p), 255})
	}
	path := filepath.Join(t.TempDir(), "c.png")
	if err := plot.WritePNG(path, img); err != nil {
		t.Fatal(err)
	}
	x, n, err := LoadImages(path, rc)
	if err != nil || n != 1 {
		t.Fatal(n, err)
	}
	for p := 0; p < 64; p++ {
		if x[p] != float32(p)/255 || x[64+p] != float32(100)/255 || x[128+p] != float32(255-p)/255 {
			t.Fatalf("pixel %d: %v %v %v", p, x[p], x[64+p], x[128+p])
		}
	}
}
