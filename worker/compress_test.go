package worker

import (
	"testing"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/internal/config"
	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
)

// realGradient is the summed DSM gradient of the reference U-Net on a batch
// of built-in synthetic images (Fashion-MNIST when installed), after a few
// training steps so that it is a gradient of training, not of initialisation.
func realGradient(t *testing.T) []float32 {
	t.Helper()
	sets := []string{"model.channels=[32,64,128]", "train.global_batch=16", "run.steps=3"}
	if _, _, err := data.Open(data.Config{Name: "fashion-mnist"}, 1); err == nil {
		sets = append(sets, "data.name=fashion-mnist")
	}
	rc, err := config.Load("", sets)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(LocalConfig{Run: rc, Out: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	grad := make([]float32, len(l.State().Params))
	if err := l.trainer.Compute(3, 0, 16, grad, model.NewLossStats(rc.Noise.Levels)); err != nil {
		t.Fatal(err)
	}
	if len(grad) != 1041601 {
		t.Fatalf("gradient of %d values, want the reference U-Net's 1,041,601", len(grad))
	}
	return grad
}

// Wire bytes against raw float32 for every codec/compressor pair, on a real
// gradient, encoded in pieces of the default chunk_bytes as the ring sends them.
func TestCompressionOnRealGradient(t *testing.T) {
	grad := realGradient(t)
	piece := config.Default("").AllReduce.ChunkBytes / 4
	raw := float64(4 * len(grad))
	want := map[string]float64{"bf16+zstd": 2.5, "int8+zstd": 3.8, "int8": 3.8, "bf16": 1.99, "none+zstd": 1.05}
	for _, q := range []string{"none", "bf16", "int8"} {
		for _, c := range []string{"none", "zstd", "s2"} {
			codec, err := allreduce.ParseCodec(q, c)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := allreduce.NewEncoder(codec)
			if err != nil {
				t.Fatal(err)
			}
			resid := make([]float32, len(grad))
			var wire int
			var buf []byte
			for lo := 0; lo < len(grad); lo += piece {
				hi := min(lo+piece, len(grad))
				var r []float32
				if codec.Lossy() {
					r = resid[lo:hi]
				}
				buf = enc.Encode(buf[:0], grad[lo:hi], r)
				wire += len(buf)
			}
			ratio := raw / float64(wire)
			t.Logf("%-10s %9d wire bytes for %9.0f raw: %.2f×", codec, wire, raw, ratio)
			if min, ok := want[codec.String()]; ok && ratio < min {
				t.Errorf("%s: %.2f×, want ≥ %.2f×", codec, ratio, min)
			}
		}
	}
}
