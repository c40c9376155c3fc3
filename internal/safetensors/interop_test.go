package safetensors

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// findPython looks, once per test binary, for a python3 that can import the
// reference safetensors package with numpy; why not, if it finds none.
var findPython = sync.OnceValues(func() (string, string) {
	var why []string
	for _, name := range []string{"/usr/bin/python3", "python3"} {
		py, err := exec.LookPath(name)
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		out, err := exec.Command(py, "-c", "import safetensors.numpy, numpy").CombinedOutput()
		if err == nil {
			return py, ""
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		why = append(why, fmt.Sprintf("%s: %s", py, lines[len(lines)-1]))
	}
	return "", strings.Join(why, "; ")
})

// python returns the interpreter findPython found, or skips the test.
func python(t *testing.T) string {
	t.Helper()
	py, why := findPython()
	if py == "" {
		t.Skipf("interop with the reference implementation not checked (Debian bookworm has no python3-safetensors): %s", why)
	}
	return py
}

const pyRead = `
import json, sys
from safetensors import safe_open
out = {"tensors": {}}
with safe_open(sys.argv[1], framework="numpy") as f:
    out["metadata"] = f.metadata()
    for k in f.keys():
        a = f.get_tensor(k)
        out["tensors"][k] = {"dtype": str(a.dtype), "shape": list(a.shape), "hex": a.astype(a.dtype.newbyteorder("<")).tobytes().hex()}
print(json.dumps(out))
`

// TestReferenceReadsOurFiles has the reference implementation read a file
// this package wrote.
func TestReferenceReadsOurFiles(t *testing.T) {
	py := python(t)
	f := sampleFile(t, 5)
	for _, tt := range []Tensor{
		randomTensor(t, "f64", F64, []int{3, 1}, 1),
		randomTensor(t, "i64", I64, []int{2}, 2),
		randomTensor(t, "i32", I32, []int{}, 3),
		randomTensor(t, "u8", U8, []int{5}, 4),
		randomTensor(t, "empty", F32, []int{0, 2}, 5),
	} {
		if err := f.Add(tt); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "go.safetensors")
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "-c", pyRead, path).Output()
	if err != nil {
		t.Fatalf("reference reader: %v", err)
	}
	var got struct {
		Metadata map[string]string
		Tensors  map[string]struct {
			DType string
			Shape []int
			Hex   string
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	numpyName := map[DType]string{F32: "float32", F64: "float64", I64: "int64", I32: "int32", U8: "uint8"}
	if len(got.Tensors) != len(f.Tensors) {
		t.Errorf("reference reader saw %d tensors, want %d", len(got.Tensors), len(f.Tensors))
	}
	for _, w := range f.Tensors {
		g, ok := got.Tensors[w.Name]
		if !ok {
			t.Errorf("reference reader lacks %q", w.Name)
			continue
		}
		if g.DType != numpyName[w.DType] || !slices.Equal(g.Shape, w.Shape) || g.Hex != hex.EncodeToString(w.Data) {
			t.Errorf("%q: reference reader got %s %v %s, want %s %v %x", w.Name, g.DType, g.Shape, g.Hex, w.DType, w.Shape, w.Data)
		}
	}
	for k, v := range f.Metadata {
		if got.Metadata[k] != v {
			t.Errorf("metadata %q: reference reader got %q, want %q", k, got.Metadata[k], v)
		}
	}
}

const pyWrite = `
import sys, numpy as np
from safetensors.numpy import save_file
save_file({
    "w": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5,
    "i": np.array([-1, 2], dtype=np.int64),
    "s": np.array(0.5, dtype=np.float64),
    "z": np.zeros((0, 3), dtype=np.uint8),
}, sys.argv[1], metadata={"step": "9"})
`

// TestWeReadReferenceFiles reads a file the reference implementation wrote.
func TestWeReadReferenceFiles(t *testing.T) {
	py := python(t)
	path := filepath.Join(t.TempDir(), "py.safetensors")
	if out, err := exec.Command(py, "-c", pyWrite, path).CombinedOutput(); err != nil {
		t.Fatalf("reference writer: %v: %s", err, out)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["step"] != "9" {
		t.Errorf("metadata %v", f.Metadata)
	}
	w, shape, err := f.F32("w")
	if err != nil || !slices.Equal(shape, []int{2, 3}) || !slices.Equal(w, []float32{-2.5, -1.5, -0.5, 0.5, 1.5, 2.5}) {
		t.Errorf("w: %v %v %v", w, shape, err)
	}
	i, shape, err := f.I64("i")
	if err != nil || !slices.Equal(shape, []int{2}) || !slices.Equal(i, []int64{-1, 2}) {
		t.Errorf("i: %v %v %v", i, shape, err)
	}
	s, shape, err := f.F64("s")
	if err != nil || len(shape) != 0 || !slices.Equal(s, []float64{0.5}) {
		t.Errorf("s: %v %v %v", s, shape, err)
	}
	z, shape, err := f.U8("z")
	if err != nil || !slices.Equal(shape, []int{0, 3}) || len(z) != 0 {
		t.Errorf("z: %v %v %v", z, shape, err)
	}
}
