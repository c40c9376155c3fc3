package worker

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/ncsn/ncsn/model/config"
)

// writeIDX writes n tiny MNIST-format image and label files (train and t10k).
func writeIDX(t *testing.T, dir string, n int) {
	t.Helper()
	for _, prefix := range []string{"train", "t10k"} {
		img := binary.BigEndian.AppendUint32(nil, 0x00000803)
		for _, d := range []uint32{uint32(n), 28, 28} {
			img = binary.BigEndian.AppendUint32(img, d)
		}
		for i := 0; i < n*28*28; i++ {
			img = append(img, byte(i*7))
		}
		lab := binary.BigEndian.AppendUint32(nil, 0x00000801)
		lab = binary.BigEndian.AppendUint32(lab, uint32(n))
		for i := 0; i < n; i++ {
			lab = append(lab, byte(i%10))
		}
		if err := os.WriteFile(filepath.Join(dir, prefix+"-images-idx3-ubyte"), img, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, prefix+"-labels-idx1-ubyte"), lab, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeCIFAR writes CIFAR-10 binary batches of n records each.
func writeCIFAR(t *testing.T, dir string, n int) {
	t.Helper()
	var b []byte
	for i := 0; i < n; i++ {
		b = append(b, byte(i%10))
		for j := 0; j < 3072; j++ {
			b = append(b, byte(i+j))
		}
	}
	for _, name := range []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Every example config in the repository loads and trains a few steps.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) < 8 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			sets := []string{"run.steps=2", "train.global_batch=4", "run.checkpoint_every=1"}
			rc, err := config.Load(f, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch rc.Data.Name {
			case "mnist":
				dir := t.TempDir()
				writeIDX(t, dir, 8)
				sets = append(sets, "data.path="+dir)
			case "cifar10":
				dir := t.TempDir()
				writeCIFAR(t, dir, 4)
				sets = append(sets, "data.path="+dir)
			case "fashion-mnist":
				if _, err := os.Stat(rc.Data.Path); err != nil {
					t.Skipf("%s: %v (apt-get install dataset-fashion-mnist)", rc.Data.Path, err)
				}
			}
			if rc, err = config.Load(f, sets); err != nil {
				t.Fatal(err)
			}
			// As the commands do when a run starts: auto becomes numbers.
			if rc, _, err = rc.Resolve(); err != nil {
				t.Fatal(err)
			}
			l, err := NewLocal(LocalConfig{Run: rc, Out: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := l.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if l.State().Step() != 2 {
				t.Fatalf("ran %d steps, want 2", l.State().Step())
			}
		})
	}
}
