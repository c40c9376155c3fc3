package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// idxBytes encodes an unsigned-byte IDX file.
func idxBytes(dims []uint32, data []byte) []byte {
	b := []byte{0, 0, idxUbyte, byte(len(dims))}
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return append(b, data...)
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pattern is n deterministic bytes that differ between calls with other salts.
func pattern(n int, salt byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + salt
	}
	return b
}

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// mnistFiles is a small valid MNIST-format folder: n train and m test images of h×w.
func mnistFiles(t testing.TB, n, m, h, w int, compress bool) map[string][]byte {
	files := map[string][]byte{
		"train-images-idx3-ubyte": idxBytes([]uint32{uint32(n), uint32(h), uint32(w)}, pattern(n*h*w, 1)),
		"train-labels-idx1-ubyte": idxBytes([]uint32{uint32(n)}, pattern(n, 2)),
		"t10k-images-idx3-ubyte":  idxBytes([]uint32{uint32(m), uint32(h), uint32(w)}, pattern(m*h*w, 3)),
		"t10k-labels-idx1-ubyte":  idxBytes([]uint32{uint32(m)}, pattern(m, 4)),
	}
	if compress {
		for k, v := range files {
			delete(files, k)
			files[k+".gz"] = gz(t, v)
		}
	}
	return files
}

func TestFashionMNISTDebian(t *testing.T) {
	if _, err := os.Stat(DefaultFashionMNISTPath); err != nil {
		t.Skipf("%s absent (apt-get install dataset-fashion-mnist): %v", DefaultFashionMNISTPath, err)
	}
	train, test, err := Open(Config{Name: "fashion-mnist"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if train.Len() != 60000 || test == nil || test.Len() != 10000 {
		t.Fatalf("Len = %d, %v", train.Len(), test)
	}
	if !slices.Equal(train.Shape(), []int{1, 28, 28}) || !slices.Equal(test.Shape(), []int{1, 28, 28}) {
		t.Fatalf("Shape = %v, %v", train.Shape(), test.Shape())
	}
	imgs := train.(*Images)
	x := make([]float32, 28*28)
	classes := make([]int, 10)
	var mean float64
	for i := range train.Len() {
		if l := imgs.Label(i); l < 0 || l > 9 {
			t.Fatalf("label %d = %d", i, l)
		} else {
			classes[l]++
		}
		if i%60 != 0 {
			continue
		}
		train.Example(i, x)
		for _, v := range x {
			if v < 0 || v > 1 {
				t.Fatalf("example %d pixel %v outside [0, 1]", i, v)
			}
			mean += float64(v)
		}
	}
	// Fashion-MNIST: 6000 of each class, mean pixel ≈ 0.286.
	for c, n := range classes {
		if n != 6000 {
			t.Errorf("class %d has %d images, want 6000", c, n)
		}
	}
	if mean /= 1000 * 28 * 28; mean < 0.25 || mean > 0.32 {
		t.Errorf("mean pixel %.3f, want ≈ 0.286", mean)
	}

	small, _, err := Open(Config{Name: "fashion-mnist", TrainSize: 100, TestSize: 10}, 0)
	if err != nil {
		t.Fatal(err)
	}
	y := make([]float32, 28*28)
	train.Example(99, x)
	small.Example(99, y)
	if small.Len() != 100 || !slices.Equal(x, y) {
		t.Fatalf("train_size 100: Len %d, example 99 equal %v", small.Len(), slices.Equal(x, y))
	}
}

func TestOpenMNISTValid(t *testing.T) {
	for _, compress := range []bool{false, true} {
		dir := t.TempDir()
		writeFiles(t, dir, mnistFiles(t, 5, 3, 4, 6, compress))
		train, test, err := Open(Config{Name: "mnist", Path: dir}, 0)
		if err != nil {
			t.Fatalf("gzip %v: %v", compress, err)
		}
		if train.Len() != 5 || test.Len() != 3 || !slices.Equal(train.Shape(), []int{1, 4, 6}) {
			t.Fatalf("Len %d/%d Shape %v", train.Len(), test.Len(), train.Shape())
		}
		x := make([]float32, 24)
		train.Example(2, x)
		want := pattern(5*24, 1)[2*24 : 3*24]
		for j := range x {
			if x[j] != float32(want[j])/255 {
				t.Fatalf("example 2 pixel %d = %v, want %v/255", j, x[j], want[j])
			}
		}
		if l := train.(*Images).Label(4); l != int(pattern(5, 2)[4]) {
			t.Fatalf("label 4 = %d", l)
		}
	}

	// A train-only folder opens with no test split, as a nil interface.
	dir := t.TempDir()
	files := mnistFiles(t, 2, 1, 3, 3, false)
	delete(files, "t10k-images-idx3-ubyte")
	delete(files, "t10k-labels-idx1-ubyte")
	writeFiles(t, dir, files)
	train, test, err := Open(Config{Name: "mnist", Path: dir}, 0)
	if err != nil || train.Len() != 2 || test != nil {
		t.Fatalf("train-only: %v, %v, %v", train, test, err)
	}
}

// TestOpenMNISTMalformed writes broken folders and checks each is a clear
// error naming the file, never a panic.
func TestOpenMNISTMalformed(t *testing.T) {
	good := mnistFiles(t, 4, 2, 3, 3, false)
	imgs := "train-images-idx3-ubyte"
	tests := []struct {
		name   string
		edit   func(files map[string][]byte)
		noDir  bool
		want   []string
		isNotE bool
	}{
		{name: "missing folder", noDir: true, want: []string{"does not exist", "data.path", "download"}, isNotE: true},
		{name: "no files", edit: func(f map[string][]byte) { clear(f) }, want: []string{"no train-images-idx3-ubyte[.gz]", "download"}},
		{name: "labels without images", edit: func(f map[string][]byte) { delete(f, imgs) }, want: []string{"no train-images-idx3-ubyte[.gz]"}},
		{name: "test images without labels", edit: func(f map[string][]byte) { delete(f, "t10k-labels-idx1-ubyte") }, want: []string{"no t10k-labels-idx1-ubyte[.gz]"}},
		{name: "wrong magic", edit: func(f map[string][]byte) { f[imgs][0] = 1 }, want: []string{imgs, "bad magic"}},
		{name: "wrong type", edit: func(f map[string][]byte) { f[imgs][2] = 0x0d }, want: []string{imgs, "element type 0x0d"}},
		{name: "wrong rank", edit: func(f map[string][]byte) { f[imgs][3] = 2 }, want: []string{imgs, "2 dimensions, want 3"}},
		{name: "empty file", edit: func(f map[string][]byte) { f[imgs] = nil }, want: []string{imgs, "read header", "unexpected EOF"}},
		{name: "truncated header", edit: func(f map[string][]byte) { f[imgs] = f[imgs][:9] }, want: []string{imgs, "read dimensions"}},
		{name: "truncated data", edit: func(f map[string][]byte) { f[imgs] = f[imgs][:len(f[imgs])-1] }, want: []string{imgs, "claims 36 bytes", "room for at most 35"}},
		{name: "huge claim", edit: func(f map[string][]byte) {
			f[imgs] = idxBytes([]uint32{1 << 31, 1 << 31, 1 << 31}, nil)
		}, want: []string{imgs, "more than 2^64 bytes"}},
		{name: "zero dimension", edit: func(f map[string][]byte) { f[imgs] = idxBytes([]uint32{0, 3, 3}, nil) }, want: []string{imgs, "dimension 0 is 0"}},
		{name: "trailing data", edit: func(f map[string][]byte) { f[imgs] = append(f[imgs], 0) }, want: []string{imgs, "trailing data"}},
		{name: "label count", edit: func(f map[string][]byte) {
			f["train-labels-idx1-ubyte"] = idxBytes([]uint32{3}, []byte{1, 2, 3})
		}, want: []string{"train-labels-idx1-ubyte has 3 labels", "has 4 images"}},
		{name: "test size differs", edit: func(f map[string][]byte) {
			f["t10k-images-idx3-ubyte"] = idxBytes([]uint32{2, 3, 4}, make([]byte, 24))
		}, want: []string{"test images are 3×4 but train images 3×3"}},
		{name: "gzip garbage", edit: func(f map[string][]byte) {
			delete(f, imgs)
			f[imgs+".gz"] = []byte{0x1f, 0x8b, 8, 0, 1, 2, 3}
		}, want: []string{imgs + ".gz", "gzip"}},
		{name: "gzip corrupt body", edit: func(f map[string][]byte) {
			delete(f, imgs)
			b := gz(t, good[imgs])
			b[len(b)-6] ^= 0xff // inside the CRC-32
			f[imgs+".gz"] = b
		}, want: []string{imgs + ".gz", "checksum"}},
		{name: "gzip truncated", edit: func(f map[string][]byte) {
			delete(f, imgs)
			b := gz(t, good[imgs])
			f[imgs+".gz"] = b[:len(b)-12]
		}, want: []string{imgs + ".gz", "unexpected EOF"}},
		{name: "gzip huge claim", edit: func(f map[string][]byte) {
			delete(f, imgs)
			f[imgs+".gz"] = gz(t, idxBytes([]uint32{60000000, 28, 28}, nil))
		}, want: []string{imgs + ".gz", "claims 47040000000 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "mnist")
			if !tt.noDir {
				files := map[string][]byte{}
				for k, v := range good {
					files[k] = slices.Clone(v)
				}
				tt.edit(files)
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				writeFiles(t, dir, files)
			}
			_, _, err := Open(Config{Name: "mnist", Path: dir}, 0)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			for _, w := range append(tt.want, dir) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tt.isNotE != errors.Is(err, fs.ErrNotExist) {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v", err, !tt.isNotE)
			}
		})
	}
}

func TestTrainSizeTooLarge(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, mnistFiles(t, 4, 2, 3, 3, true))
	_, _, err := Open(Config{Name: "mnist", Path: dir, TrainSize: 5}, 0)
	if err == nil || !strings.Contains(err.Error(), "data.train_size: 5, but the files hold only 4") {
		t.Fatalf("Open = %v", err)
	}
}

func FuzzIDX(f *testing.F) {
	f.Add(idxBytes([]uint32{2, 3, 3}, pattern(18, 0)), 3)
	f.Add(idxBytes([]uint32{5}, pattern(5, 0)), 1)
	f.Add(gz(f, idxBytes([]uint32{2, 2, 2}, pattern(8, 9))), 3)
	f.Add(gz(f, idxBytes([]uint32{1 << 20, 1 << 12, 1}, nil)), 3)
	f.Add(idxBytes([]uint32{1 << 31, 1 << 31}, nil), 2)
	f.Fuzz(func(t *testing.T, b []byte, ndims int) {
		ndims = 1 + ndims&3
		r, limit, err := maybeGunzip(bufioReader(b), int64(len(b)))
		if err != nil {
			return
		}
		dims, data, err := decodeIDX(r, ndims, limit)
		if err != nil {
			return
		}
		// A successful decode is consistent with its header and round-trips.
		if len(dims) != ndims {
			t.Fatalf("%d dims, want %d", len(dims), ndims)
		}
		n := 1
		u := make([]uint32, len(dims))
		for i, d := range dims {
			n *= d
			u[i] = uint32(d)
		}
		if n != len(data) {
			t.Fatalf("dims %v but %d bytes", dims, len(data))
		}
		if int64(n) > limit {
			t.Fatalf("decoded %d bytes past the limit %d", n, limit)
		}
		enc := idxBytes(u, data)
		if !(len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b) && !bytes.Equal(enc, b) {
			t.Fatalf("raw input does not round-trip")
		}
	})
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func TestReadN(t *testing.T) {
	tests := []struct {
		have, n, prealloc int
		wantErr           bool
	}{
		{0, 0, 4, false},
		{10, 10, 64, false},
		{10, 10, 3, false},
		{1000, 1000, 7, false},
		{1001, 1000, 7, false}, // readN leaves the rest unread
		{999, 1000, 7, true},
		{0, 5, 0, true},
	}
	for _, tt := range tests {
		src := pattern(tt.have, 5)
		got, err := readN(bytes.NewReader(src), tt.n, tt.prealloc)
		if tt.wantErr {
			if err == nil {
				t.Errorf("readN(%d of %d) succeeded", tt.n, tt.have)
			}
			if !bytes.Equal(got, src) {
				t.Errorf("readN(%d of %d) returned %d bytes, want the %d read", tt.n, tt.have, len(got), len(src))
			}
			continue
		}
		if err != nil || !bytes.Equal(got, src[:tt.n]) {
			t.Errorf("readN(%d of %d, prealloc %d) = %d bytes, %v", tt.n, tt.have, tt.prealloc, len(got), err)
		}
	}
}
