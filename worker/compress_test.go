package worker

import (
	"math"
	"testing"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// realGradient is the summed DSM gradient of the reference U-Net on a batch
// of built-in synthetic images (Fashion-MNIST when installed), after a few
// training steps so that it is a gradient of training, not of initialisation.
func realGradient(t testing.TB) []float32 { return realGradients(t, 1)[0] }

// realGradients are the gradients of k successive batches (steps 3, 4, …) at
// the parameters realGradient is taken at.
func realGradients(t testing.TB, k int) [][]float32 {
	t.Helper()
	// NCSN's schedule, which the codecs' error bounds below were measured on
	// (the image defaults now follow NCSNv2 and resolve σ from the data).
	sets := []string{"model.channels=[32,64,128]", "train.global_batch=16", "run.steps=3",
		"noise.sigma_max=1", "noise.levels=10", "sample.eps=2e-5"}
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
	if n := len(l.State().Params); n != 1041601 {
		t.Fatalf("gradient of %d values, want the reference U-Net's 1,041,601", n)
	}
	grads := make([][]float32, k)
	for i := range grads {
		grads[i] = make([]float32, len(l.State().Params))
		if err := l.trainer.Compute(uint64(3+i), 0, 16, grads[i], model.NewLossStats(rc.Noise.Levels)); err != nil {
			t.Fatal(err)
		}
	}
	return grads
}

// pieceCoder encodes a gradient in pieces of the default chunk_bytes as the ring
// sends them, with error feedback as the ring does it (the last residual added
// before encoding, the new one kept), and decodes them back. It reuses its
// coders and buffers, as the ring does.
type pieceCoder struct {
	piece  int
	codec  allreduce.Codec
	enc    *allreduce.Encoder
	dec    *allreduce.Decoder
	in     []float32 // the last gradient plus the residual before it: what was encoded
	resid  []float32
	pieces [][]byte
}

func newPieceCoder(t testing.TB, codec allreduce.Codec, n int) *pieceCoder {
	t.Helper()
	enc, err := allreduce.NewEncoder(codec)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := allreduce.NewDecoder(codec)
	if err != nil {
		t.Fatal(err)
	}
	piece := config.Default("").AllReduce.ChunkBytes / 4
	return &pieceCoder{piece: piece, codec: codec, enc: enc, dec: dec,
		in: make([]float32, n), resid: make([]float32, n), pieces: make([][]byte, (n+piece-1)/piece)}
}

// encode encodes grad plus the residual of the last call and returns the bytes
// it put on the wire.
func (p *pieceCoder) encode(grad []float32) (wire int) {
	for i, v := range grad {
		p.in[i] = v + p.resid[i]
	}
	for i := range p.pieces {
		lo, hi := i*p.piece, min((i+1)*p.piece, len(grad))
		var r []float32
		if p.codec.Lossy() {
			r = p.resid[lo:hi]
		}
		p.pieces[i] = p.enc.Encode(p.pieces[i][:0], p.in[lo:hi], r)
		wire += len(p.pieces[i])
	}
	return wire
}

// decode decodes the last encoded pieces into y.
func (p *pieceCoder) decode(t testing.TB, y []float32) {
	t.Helper()
	for i, b := range p.pieces {
		if err := p.dec.Decode(y[i*p.piece:min((i+1)*p.piece, len(y))], b); err != nil {
			t.Fatalf("%v: piece %d: %v", p.codec, i, err)
		}
	}
}

func allCodecs(t testing.TB) []allreduce.Codec {
	var cs []allreduce.Codec
	for _, q := range []string{"none", "bf16", "int8", "int4"} {
		for _, c := range []string{"none", "zstd", "s2"} {
			codec, err := allreduce.ParseCodec(q, c)
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, codec)
		}
	}
	return cs
}

var maxRelL2 = map[allreduce.Quant]float64{allreduce.QuantNone: 0, allreduce.QuantBF16: 0.004, allreduce.QuantInt8: 0.01, allreduce.QuantInt4: 0.13}

// Wire bytes against raw float32 for every codec/compressor pair, on real
// gradients, encoded in pieces of the default chunk_bytes as the ring sends them.
// Error feedback carries each step's residual into the next, so the first step
// and the steady state (the last of a few) differ: the residual makes the codes
// less compressible.
func TestCompressionOnRealGradient(t *testing.T) {
	const steps = 6
	grads := realGradients(t, steps)
	raw := float64(4 * len(grads[0]))
	// The targets: ≈ 2.8× for bf16+zstd, ≥ 4× for int8+zstd, ≥ 6× for
	// int4 and 8× with a compressor.
	want := map[string]float64{"bf16+zstd": 2.5, "int8+zstd": 4.0, "int8": 3.8, "bf16": 1.99, "none+zstd": 1.05,
		"int4": 7.5, "int4+zstd": 8, "int4+s2": 7.5}
	y := make([]float32, len(grads[0]))
	for _, codec := range allCodecs(t) {
		pc := newPieceCoder(t, codec, len(grads[0]))
		for s, grad := range grads {
			wire := pc.encode(grad)
			pc.decode(t, y)
			var e2, g2 float64
			for i, v := range grad {
				d := float64(y[i] - pc.in[i])
				e2 += d * d
				g2 += float64(v) * float64(v)
			}
			if s != 0 && s != steps-1 {
				continue
			}
			ratio, rel := raw/float64(wire), math.Sqrt(e2/g2)
			state := map[bool]string{true: "first", false: "steady"}[s == 0]
			t.Logf("%-10s %-6s %9d wire bytes for %9.0f raw: %5.2f×, relative L2 error %.4f", codec, state, wire, raw, ratio, rel)
			if w, ok := want[codec.String()]; ok && ratio < w {
				t.Errorf("%s, %s step: %.2f×, want ≥ %.2f×", codec, state, ratio, w)
			}
			// The ratios are only worth having at the precision the quantisers promise:
			// bf16 keeps 8 significant bits, int8 7 bits of each block's absmax, int4 3.
			if limit := maxRelL2[codec.Quant]; rel > limit {
				t.Errorf("%s, %s step: relative L2 error %.4f, want ≤ %g", codec, state, rel, limit)
			}
		}
	}
}

// Single-core throughput of each codec on the real gradient, in MB/s of float32
// input: go test -run '^$' -bench CodecOnRealGradient -cpu 1 ./worker
func BenchmarkCodecOnRealGradient(b *testing.B) {
	grad := realGradient(b)
	y := make([]float32, len(grad))
	for _, codec := range allCodecs(b) {
		pc := newPieceCoder(b, codec, len(grad))
		b.Run(codec.String()+"/encode", func(b *testing.B) {
			b.SetBytes(int64(4 * len(grad)))
			for b.Loop() {
				pc.encode(grad)
			}
		})
		pc.encode(grad)
		b.Run(codec.String()+"/decode", func(b *testing.B) {
			b.SetBytes(int64(4 * len(grad)))
			for b.Loop() {
				pc.decode(b, y)
			}
		})
	}
}
