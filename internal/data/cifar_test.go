package data

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// cifarBatch is n valid records: label (salt+i)%10, pixels from pattern.
func cifarBatch(n int, salt byte) []byte {
	var b []byte
	pix := pattern(n*cifarPixels, salt)
	for i := range n {
		b = append(b, (salt+byte(i))%cifarClasses)
		b = append(b, pix[i*cifarPixels:(i+1)*cifarPixels]...)
	}
	return b
}

// cifarFiles is a small valid CIFAR-10 folder with batch k holding k+1 records.
func cifarFiles(sub string) map[string][]byte {
	files := map[string][]byte{}
	for k, name := range cifarTrainFiles {
		files[filepath.Join(sub, name)] = cifarBatch(k+1, byte(k))
	}
	files[filepath.Join(sub, "test_batch.bin")] = cifarBatch(2, 9)
	return files
}

func TestOpenCIFARValid(t *testing.T) {
	for _, sub := range []string{"", cifarSubdir} {
		dir := t.TempDir()
		writeFiles(t, dir, cifarFiles(sub))
		train, test, err := Open(Config{Name: "cifar10", Path: dir}, 0)
		if err != nil {
			t.Fatalf("subfolder %q: %v", sub, err)
		}
		if train.Len() != 1+2+3+4+5 || test.Len() != 2 {
			t.Fatalf("Len = %d, %d", train.Len(), test.Len())
		}
		if !slices.Equal(train.Shape(), []int{3, 32, 32}) {
			t.Fatalf("Shape = %v", train.Shape())
		}
		// Example 3 is the first record of data_batch_3 (after 1 + 2 records).
		x := make([]float32, cifarPixels)
		train.Example(3, x)
		want := cifarBatch(3, 2)[1:cifarRecord]
		for j := range x {
			if x[j] != float32(want[j])/255 {
				t.Fatalf("example 3 pixel %d = %v, want %d/255", j, x[j], want[j])
			}
		}
		if l := train.(*Images).Label(3); l != 2 {
			t.Fatalf("label 3 = %d, want 2", l)
		}
	}

	dir := t.TempDir()
	files := cifarFiles("")
	delete(files, "test_batch.bin")
	writeFiles(t, dir, files)
	train, test, err := Open(Config{Name: "cifar10", Path: dir, TrainSize: 4}, 0)
	if err != nil || train.Len() != 4 || test != nil {
		t.Fatalf("train-only, train_size 4: %v, %v, %v", train, test, err)
	}
}

func TestOpenCIFARMalformed(t *testing.T) {
	b3 := "data_batch_3.bin"
	tests := []struct {
		name   string
		edit   func(files map[string][]byte)
		noDir  bool
		want   []string
		isNotE bool
	}{
		{name: "missing folder", noDir: true, want: []string{"does not exist", "cifar-10-binary.tar.gz"}, isNotE: true},
		{name: "no batches", edit: func(f map[string][]byte) { clear(f) }, want: []string{"no data_batch_1.bin", cifarSubdir, "cifar-10-binary.tar.gz"}},
		{name: "missing batch", edit: func(f map[string][]byte) { delete(f, b3) }, want: []string{"missing [data_batch_3.bin]"}},
		{name: "empty batch", edit: func(f map[string][]byte) { f[b3] = nil }, want: []string{b3, "empty"}},
		{name: "partial record", edit: func(f map[string][]byte) { f[b3] = f[b3][:len(f[b3])-1] }, want: []string{b3, "not a whole number of 3073-byte records"}},
		{name: "extra byte", edit: func(f map[string][]byte) { f[b3] = append(f[b3], 0) }, want: []string{b3, "size 9220"}},
		{name: "bad label", edit: func(f map[string][]byte) { f[b3][cifarRecord] = 200 }, want: []string{b3, "record 1: label 200, want 0..9"}},
		{name: "bad test label", edit: func(f map[string][]byte) { f["test_batch.bin"][0] = 10 }, want: []string{"test_batch.bin", "record 0: label 10"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cifar")
			if !tt.noDir {
				files := cifarFiles("")
				tt.edit(files)
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				writeFiles(t, dir, files)
			}
			_, _, err := Open(Config{Name: "cifar10", Path: dir}, 0)
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

func FuzzCIFAR(f *testing.F) {
	f.Add(cifarBatch(1, 0), uint8(1))
	f.Add(cifarBatch(2, 8), uint8(2))
	f.Add(cifarBatch(1, 3)[:100], uint8(1))
	f.Add(append(cifarBatch(1, 0), 11), uint8(2))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, records uint8) {
		n := int(records % 4)
		pix, labels := make([]byte, n*cifarPixels), make([]byte, n)
		err := decodeCIFAR(bytes.NewReader(b), pix, labels)
		// The decoder must succeed exactly when the first n records are
		// complete and carry valid labels.
		ok := len(b) >= n*cifarRecord
		for i := 0; ok && i < n; i++ {
			ok = b[i*cifarRecord] < cifarClasses
		}
		if (err == nil) != ok {
			t.Fatalf("%d records from %d bytes: err = %v, want ok = %v", n, len(b), err, ok)
		}
		if err != nil {
			return
		}
		for i := range n {
			rec := b[i*cifarRecord : (i+1)*cifarRecord]
			if labels[i] != rec[0] || !bytes.Equal(pix[i*cifarPixels:(i+1)*cifarPixels], rec[1:]) {
				t.Fatalf("record %d decoded differently", i)
			}
		}
		if m, err := cifarRecords(int64(len(b))); err == nil && len(b) == n*cifarRecord && m != n {
			t.Fatalf("cifarRecords(%d) = %d, want %d", len(b), m, n)
		}
	})
}
