package npy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, shape := range [][]int{{0}, {5}, {2, 3}, {4, 1, 28, 28}, {3, 3, 32, 32}} {
		n := 1
		for _, d := range shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(math.Sin(float64(i))) * 3
		}
		if n > 2 {
			data[1] = float32(math.Inf(-1))
		}
		var buf bytes.Buffer
		if err := Encode(&buf, shape, data); err != nil {
			t.Fatal(err)
		}
		// The data offset is a multiple of 64, as numpy writes it.
		hlen := int(binary.LittleEndian.Uint16(buf.Bytes()[8:10]))
		if (10+hlen)%64 != 0 {
			t.Errorf("shape %v: data at offset %d, want a multiple of 64", shape, 10+hlen)
		}
		gs, gd, err := Decode(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(gs, shape) || !slices.Equal(gd, data) {
			t.Errorf("shape %v: round trip gave shape %v, equal data %v", shape, gs, slices.Equal(gd, data))
		}
	}
}

func TestDecodeDtypes(t *testing.T) {
	header := func(descr, shape string) []byte {
		h := "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + shape + "), }\n"
		var b bytes.Buffer
		b.WriteString("\x93NUMPY\x01\x00")
		binary.Write(&b, binary.LittleEndian, uint16(len(h)))
		b.WriteString(h)
		return b.Bytes()
	}
	u8 := append(header("|u1", "3,"), 0, 255, 51)
	_, d, err := Decode(bytes.NewReader(u8))
	if err != nil || !slices.Equal(d, []float32{0, 1, 0.2}) {
		t.Errorf("uint8: %v, %v", d, err)
	}
	f8 := header("<f8", "2,")
	for _, v := range []float64{0.5, -2} {
		f8 = binary.LittleEndian.AppendUint64(f8, math.Float64bits(v))
	}
	_, d, err = Decode(bytes.NewReader(f8))
	if err != nil || !slices.Equal(d, []float32{0.5, -2}) {
		t.Errorf("float64: %v, %v", d, err)
	}
	for _, bad := range [][]byte{
		header("<i4", "1,"),
		header(">f4", "1,"),
		header("<f4", "1000000,1000000,1000"), // too large: refused before allocating
		header("<f4", "2,"),                   // no data
		[]byte("\x93NUMPY\x09\x00"),
		[]byte("PK\x03\x04"),
	} {
		if _, _, err := Decode(bytes.NewReader(bad)); !errors.Is(err, ErrFormat) {
			t.Errorf("%q: err %v, want ErrFormat", bad[:min(len(bad), 40)], err)
		}
	}
}

// TestNumpyReads checks the files against numpy itself where it is installed.
func TestNumpyReads(t *testing.T) {
	// Debian's python3 (with python3-numpy, which .ci/run installs) before any other on PATH.
	py := ""
	for _, c := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(c); err == nil && exec.Command(p, "-c", "import numpy").Run() == nil {
			py = p
			break
		}
	}
	if py == "" {
		t.Skip("python3 with numpy is not installed")
	}
	path := filepath.Join(t.TempDir(), "x.npy")
	if err := WriteFile(path, []int{2, 1, 2, 3}, []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11.5}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "-c", "import numpy as np,sys; a=np.load(sys.argv[1]); print(a.dtype, a.shape, a[1,0,1,2])", path).CombinedOutput()
	if err != nil {
		t.Fatalf("numpy: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "float32 (2, 1, 2, 3) 11.5" {
		t.Errorf("numpy read %q", got)
	}
	np := filepath.Join(t.TempDir(), "np.npy")
	if out, err := exec.Command(py, "-c", "import numpy as np,sys; np.save(sys.argv[1], np.arange(6, dtype=np.float32).reshape(2,3)/4)", np).CombinedOutput(); err != nil {
		t.Fatalf("numpy: %v: %s", err, out)
	}
	shape, data, err := ReadFile(np)
	if err != nil || !slices.Equal(shape, []int{2, 3}) || !slices.Equal(data, []float32{0, 0.25, 0.5, 0.75, 1, 1.25}) {
		t.Errorf("numpy's file: %v %v %v", shape, data, err)
	}
}

func FuzzDecode(f *testing.F) {
	var b bytes.Buffer
	Encode(&b, []int{2, 2}, []float32{1, 2, 3, 4})
	f.Add(b.Bytes())
	f.Add([]byte("\x93NUMPY\x02\x00\x10\x00\x00\x00{'descr': '|u1'}"))
	f.Fuzz(func(t *testing.T, in []byte) {
		shape, data, err := Decode(bytes.NewReader(in))
		if err != nil {
			return
		}
		n := 1
		for _, d := range shape {
			n *= d
		}
		if n != len(data) {
			t.Fatalf("shape %v with %d values", shape, len(data))
		}
	})
}
