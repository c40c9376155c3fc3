package allreduce

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestInt4Layout pins the wire format: bfloat16 scales first, then two codes per byte, the
// even value in the low nibble.
func TestInt4Layout(t *testing.T) {
	x := make([]float32, Int4Block+3)
	copy(x, []float32{7, -3.5, 0, 1, 0.49})
	copy(x[Int4Block:], []float32{-0.5, 0.25, 0.125})
	want := []byte{
		0x80, 0x3f, // block 0: absmax 7, scale 1
		0x93, 0x3d, // block 1: absmax 0.5, scale 0.5/7 rounded up to bfloat16 (0.07177734375)
	}
	// -3.5 ties to the even -4 (0xc); 0.49 rounds to 0.
	want = append(want, 0xc7, 0x10, 0x00)
	want = append(want, make([]byte, Int4Block/2-3)...)
	// Block 1: -0.5/scale = -6.97 → -7 (0x9); 0.25 → 3.48 → 3; 0.125 → 1.74 → 2, padding 0.
	want = append(want, 0x39, 0x02)
	enc, _ := NewEncoder(Codec{QuantInt4, CompressNone})
	got := enc.Encode(nil, x, nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding\n% x\nwant\n% x", got, want)
	}
	dec, _ := NewDecoder(Codec{QuantInt4, CompressNone})
	y := make([]float32, len(x))
	if err := dec.Decode(y, got); err != nil {
		t.Fatal(err)
	}
	s := float32(0.07177734375)
	for i, w := range map[int]float32{0: 7, 1: -4, 2: 0, 3: 1, 4: 0, Int4Block: -7 * s, Int4Block + 1: 3 * s, Int4Block + 2: 2 * s} {
		if y[i] != w {
			t.Errorf("[%d] decoded %g, want %g", i, y[i], w)
		}
	}
}

// TestResidualCarriesError: encoding a gradient plus the previous residual, step after step,
// makes the sum of everything decoded follow the sum of the gradients within one step's
// error, however many steps; without the residual, values below half a block's step are lost
// every time and the gap grows with the steps.
func TestResidualCarriesError(t *testing.T) {
	const n, steps = 4096, 500
	rng := rand.New(rand.NewPCG(21, 22))
	for _, q := range []Quant{QuantInt8, QuantInt4} {
		for _, comp := range []Compressor{CompressNone, CompressZstd} {
			c := Codec{q, comp}
			t.Run(c.String(), func(t *testing.T) {
				enc, _ := NewEncoder(c)
				dec, _ := NewDecoder(c)
				run := func(feedback bool) (drift, bound float64) {
					resid := make([]float32, n)
					in, y := make([]float32, n), make([]float32, n)
					truth, applied := make([]float64, n), make([]float64, n)
					var buf []byte
					for range steps {
						for i := range in {
							g := float32(1e-3 * (1 + rng.Float64())) // small, positive: a bias shows
							if i%64 == 0 {
								g = float32(rng.NormFloat64()) // one large value per block sets its scale
							}
							truth[i] += float64(g)
							in[i] = g
							if feedback {
								in[i] += resid[i]
							}
						}
						buf = enc.Encode(buf[:0], in, resid)
						if err := dec.Decode(y, buf); err != nil {
							t.Fatal(err)
						}
						for i, v := range y {
							applied[i] += float64(v)
						}
						for i := 0; i < n; i += min(Int8Block, Int4Block) { // once per block
							bound = math.Max(bound, maxCodecError(q, in, i))
						}
					}
					for i := range truth {
						drift = math.Max(drift, math.Abs(applied[i]-truth[i]))
					}
					return drift, bound
				}
				with, bound := run(true)
				without, _ := run(false)
				t.Logf("after %d steps: |Σ decoded − Σ true| ≤ %.3g with the residual fed back, %.3g without; one step's bound %.3g", steps, with, without, bound)
				if with > bound*1.001 {
					t.Errorf("with feedback the drift %g exceeds one step's error bound %g", with, bound)
				}
				if without < 2*bound {
					t.Errorf("without feedback the drift %g is within twice one step's bound %g: the test shows nothing", without, bound)
				}
			})
		}
	}
}

// Single-core speed of each quantiser, in bytes of float32 input per second:
// go test -run '^$' -bench Quantize -cpu 1 ./allreduce
func BenchmarkQuantize(b *testing.B) {
	x := gradient(rand.New(rand.NewPCG(23, 24)), 64<<10) // one default-sized piece
	resid := make([]float32, len(x))
	y := make([]float32, len(x))
	for _, q := range []Quant{QuantBF16, QuantInt8, QuantInt4} {
		for _, comp := range []Compressor{CompressNone, CompressZstd} {
			c := Codec{q, comp}
			enc, _ := NewEncoder(c)
			dec, _ := NewDecoder(c)
			buf := enc.Encode(nil, x, resid)
			b.Run(fmt.Sprintf("%v/encode", c), func(b *testing.B) {
				b.SetBytes(int64(4 * len(x)))
				for b.Loop() {
					buf = enc.Encode(buf[:0], x, resid)
				}
			})
			b.Run(fmt.Sprintf("%v/decode-add", c), func(b *testing.B) {
				b.SetBytes(int64(4 * len(x)))
				for b.Loop() {
					if err := dec.DecodeAdd(y, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestInt4HasBad: the word-at-a-time test agrees with a nibble-by-nibble look.
func TestInt4HasBad(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	for range 20000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			// Nibbles near 0x8 and 0x0 stress the borrows of the word-wide subtraction.
			b[i] = byte(rng.IntN(16)) | byte([]int{0, 7, 9, 0xf, 1, rng.IntN(16)}[rng.IntN(6)])<<4
			if rng.IntN(3) > 0 && b[i]&15 == 8 {
				b[i] ^= 1
			}
			if rng.IntN(3) > 0 && b[i]>>4 == 8 {
				b[i] ^= 0x10
			}
		}
		want := false
		for _, c := range b {
			want = want || c&15 == 8 || c>>4 == 8
		}
		if got := int4HasBad(b); got != want {
			t.Fatalf("int4HasBad(% x) = %v, want %v", b, got, want)
		}
	}
}
