package plot

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGrid(t *testing.T) {
	// Two 2×2 grey images: the first black, the second white, scaled ×3.
	x := []float32{0, 0, 0, 0, 1, 1, 2, -1}
	img, err := Grid(x, 2, 1, 2, 2, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 2*(6+2)+2 || b.Dy() != 6+4 {
		t.Fatalf("bounds %v", b)
	}
	if c := img.RGBAAt(0, 0); c.A != 255 || c.R != 0x40 {
		t.Fatalf("border pixel %v, want opaque grey", c)
	}
	if c := img.RGBAAt(2, 2); c.R != 0 {
		t.Fatalf("first image pixel %v, want black", c)
	}
	if c := img.RGBAAt(10, 2); c.R != 255 {
		t.Fatalf("second image pixel %v, want white", c)
	}
	if c := img.RGBAAt(10+3, 2+3); c.R != 0 {
		t.Fatalf("clamped -1 gives %v, want black", c)
	}
	p := filepath.Join(t.TempDir(), "g.png")
	if err := WritePNG(p, img); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(p)
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatal(err)
	}
	if _, err := Grid(x, 3, 1, 2, 2, 2, 1); err == nil {
		t.Fatal("size mismatch accepted")
	}
}

func TestCSV(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.csv")
	if err := WriteCSV(p, []float32{1, 2.5, -3, 4}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if string(b) != "x,y\n1,2.5\n-3,4\n" {
		t.Fatalf("csv %q", b)
	}
	if err := WriteCSV(p, []float32{1}); err == nil || !strings.Contains(err.Error(), "pairs") {
		t.Fatalf("odd length: %v", err)
	}
}
