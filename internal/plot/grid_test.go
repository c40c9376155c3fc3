package plot

import (
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

func TestScatterAndLossCurve(t *testing.T) {
	img, err := Scatter([]float32{0, 0, 5, 5, 100, 100}, -8, 8, "samples", [][]float64{{5, 5}})
	if err != nil {
		t.Fatal(err)
	}
	// The point at (5,5) is drawn in blue under the red centre mark's arm;
	// the point at (100,100) is outside the box and not drawn anywhere.
	c := newChart(560, 560, "", "", "", -8, 8, -8, 8, false)
	if got := img.RGBAAt(c.px(0), c.py(0)); got != blue {
		t.Fatalf("point at origin drawn as %v", got)
	}
	if got := img.RGBAAt(c.px(5)-5, c.py(5)); got != red {
		t.Fatalf("centre mark missing: %v", got)
	}
	loss := make([]float64, 200)
	for i := range loss {
		loss[i] = 100 / float64(i+1)
	}
	if _, err := LossCurve(loss, "loss"); err != nil {
		t.Fatal(err)
	}
	if _, err := LossCurve([]float64{0, -1}, "loss"); err == nil {
		t.Fatal("no positive values accepted")
	}
}

func TestLossLogResume(t *testing.T) {
	p := filepath.Join(t.TempDir(), "loss.csv")
	l, err := OpenLossLog(p, 2)
	if err != nil {
		t.Fatal(err)
	}
	for s := int64(1); s <= 3; s++ {
		l.Add(s, float64(10*s), []float64{1, 2})
	}
	l.Close()
	// A resumed run repeats step 3 and goes on; a torn last line is ignored.
	l, _ = OpenLossLog(p, 2)
	l.Add(3, 33, nil)
	l.Add(4, 40, nil)
	l.Close()
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("5")
	f.Close()
	got, err := ReadLossLog(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{10, 20, 33, 40}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	b, _ := os.ReadFile(p)
	if !strings.HasPrefix(string(b), "step,loss,loss_level_0,loss_level_1\n") || strings.Count(string(b), "step,") != 1 {
		t.Fatalf("header: %q", b)
	}
	// A run resumed from step 1 drops the rows past it: the file's steps only go up.
	l, _ = OpenLossLog(p, 2)
	l.Add(2, 22, nil)
	l.Close()
	b, _ = os.ReadFile(p)
	if want := "step,loss,loss_level_0,loss_level_1\n1,10,1,2\n2,22\n"; string(b) != want {
		t.Fatalf("after a resume at step 2 the log is %q, want %q", b, want)
	}
}

// Plots take the usual mode, 0666 less the umask, like the checkpoints beside them.
func TestWritePNGMode(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "p.png")
	if err := WritePNG(path, image.NewGray(image.Rect(0, 0, 2, 2))); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, %v; want 0644", st.Mode().Perm(), err)
	}
}

// Plot draws what has been added so far, before the log is closed.
func TestLossLogPlot(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLossLog(filepath.Join(dir, "loss.csv"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for s := int64(1); s <= 20; s++ {
		l.Add(s, 1/float64(s), []float64{1})
	}
	png := filepath.Join(dir, "loss.png")
	if err := l.Plot(png, "t"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(png); err != nil || st.Size() < 100 {
		t.Fatalf("loss.png: %v %v", st, err)
	}
}
