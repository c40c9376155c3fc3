package allreduce

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/s2"
)

func allCodecs() []Codec {
	var cs []Codec
	for q := range quantNames {
		for c := range compressorNames {
			cs = append(cs, Codec{Quant(q), Compressor(c)})
		}
	}
	return cs
}

func gradient(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		// Heavy-tailed like real gradients: most values small, a few large.
		x[i] = float32(rng.NormFloat64() * math.Exp(2*rng.NormFloat64()))
	}
	return x
}

// maxCodecError bounds |decoded - x| for one encoding of x.
func maxCodecError(q Quant, x []float32, i int) float64 {
	switch q {
	case QuantBF16:
		// 8 significant bits, fewer below bfloat16's normal range, whose spacing is 2⁻¹³³.
		return math.Max(math.Abs(float64(x[i]))/256, 0x1p-134)
	case QuantInt8:
		b := i / Int8Block
		var amax float64
		for _, v := range x[b*Int8Block : min((b+1)*Int8Block, len(x))] {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
		// Half a step; the float32 scale's rounding adds up to 127 × 2⁻¹⁵⁰ for the tiniest
		// blocks, whose scale may round to 0.
		return amax/254*1.0001 + 0x1p-143
	case QuantInt4:
		b := i / Int4Block
		var amax float64
		for _, v := range x[b*Int4Block : min((b+1)*Int4Block, len(x))] {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
		// Half a step of the scale, which rounding up to bfloat16 makes up to 2⁻⁷ coarser, or
		// one bfloat16 subnormal (2⁻¹³³) coarser for the tiniest blocks.
		return (amax/int4Levels*(1+0x1p-7) + 0x1p-133) / 2 * 1.0001
	}
	return 0
}

func TestCodecRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range allCodecs() {
		for _, n := range []int{0, 1, 127, 128, 129, 1000, 65536} {
			t.Run(c.String(), func(t *testing.T) {
				x := gradient(rng, n)
				enc, err := NewEncoder(c)
				if err != nil {
					t.Fatal(err)
				}
				dec, err := NewDecoder(c)
				if err != nil {
					t.Fatal(err)
				}
				resid := make([]float32, n)
				b := enc.Encode([]byte("prefix"), x, resid)
				if string(b[:6]) != "prefix" {
					t.Fatalf("Encode did not append")
				}
				y := make([]float32, n)
				if err := dec.Decode(y, b[6:]); err != nil {
					t.Fatalf("Decode: %v", err)
				}
				for i := range x {
					if got := x[i] - y[i]; got != resid[i] {
						t.Fatalf("n=%d [%d]: residual %g, want x-decoded = %g", n, i, resid[i], got)
					}
					if e := math.Abs(float64(x[i] - y[i])); e > maxCodecError(c.Quant, x, i) {
						t.Fatalf("n=%d [%d]: x=%g decoded %g: error %g over bound %g", n, i, x[i], y[i], e, maxCodecError(c.Quant, x, i))
					}
				}
				z := make([]float32, n)
				for i := range z {
					z[i] = 1
				}
				if err := dec.DecodeAdd(z, b[6:]); err != nil {
					t.Fatalf("DecodeAdd: %v", err)
				}
				for i := range z {
					if z[i] != 1+y[i] {
						t.Fatalf("DecodeAdd [%d] = %g, want %g", i, z[i], 1+y[i])
					}
				}
				if n == 65536 {
					t.Logf("%v: %d values → %d bytes (%.2fx smaller than float32)", c, n, len(b)-6, float64(4*n)/float64(len(b)-6))
				}
			})
		}
	}
}

func TestCodecSpecialValues(t *testing.T) {
	x := []float32{0, float32(math.Copysign(0, -1)), 1e-40, -1e-40, math.MaxFloat32, -math.MaxFloat32, float32(math.Inf(1)), float32(math.NaN())}
	for _, c := range allCodecs() {
		enc, _ := NewEncoder(c)
		dec, _ := NewDecoder(c)
		y := make([]float32, len(x))
		// Special values must not break decoding; NaN and Inf may poison their int8 or int4 block.
		if err := dec.Decode(y, enc.Encode(nil, x, nil)); err != nil {
			t.Errorf("%v: %v", c, err)
		}
		if (c.Quant == QuantNone || c.Quant == QuantBF16) && !math.IsNaN(float64(y[7])) {
			t.Errorf("%v: NaN decoded as %g", c, y[7])
		}
	}
}

func TestCodecSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	x := gradient(rng, 64<<10)
	resid := make([]float32, len(x))
	y := make([]float32, len(x))
	for _, c := range allCodecs() {
		enc, _ := NewEncoder(c)
		dec, _ := NewDecoder(c)
		buf := enc.Encode(nil, x, resid)
		allocs := testing.AllocsPerRun(20, func() {
			buf = enc.Encode(buf[:0], x, resid)
			if err := dec.DecodeAdd(y, buf); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocations per encode+decode, want 0", c, allocs)
		}
	}
}

func TestDecodeRejectsBadBytes(t *testing.T) {
	x := gradient(rand.New(rand.NewPCG(5, 6)), 1000)
	for _, c := range allCodecs() {
		enc, _ := NewEncoder(c)
		dec, _ := NewDecoder(c)
		good := enc.Encode(nil, x, nil)
		y := make([]float32, len(x))
		cases := map[string][]byte{
			"empty":     nil,
			"truncated": good[:len(good)/2],
			"extended":  append(append([]byte(nil), good...), 1, 2, 3),
		}
		if c.Compressor != CompressNone {
			cases["garbage"] = []byte("this is not a compressed frame at all, not at all")
		}
		if c.Compressor == CompressNone {
			edit := func(f func(b []byte)) []byte {
				b := append([]byte(nil), good...)
				f(b)
				return b
			}
			switch c.Quant {
			case QuantInt8:
				cases["negative scale"] = edit(func(b []byte) { b[3] |= 0x80 })
				cases["code -128"] = edit(func(b []byte) { b[4*int8Blocks(len(x))+500] = 0x80 })
			case QuantInt4:
				cases["negative scale"] = edit(func(b []byte) { b[2*3+1] |= 0x80 })
				cases["low code -8"] = edit(func(b []byte) { b[len(b)-1] = 0x08 })
				cases["high code -8"] = edit(func(b []byte) { b[2*int4Blocks(len(x))] = 0x87 })
			}
		}
		for name, b := range cases {
			if err := dec.Decode(y, b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%v, %s: err = %v, want ErrCorrupt", c, name, err)
			}
		}
		// A piece for fewer values than expected is refused, not read past.
		if err := dec.Decode(make([]float32, 2000), good); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%v, wrong length: err = %v, want ErrCorrupt", c, err)
		}
	}
	// An odd count leaves half a byte that must stay zero.
	for _, comp := range []Compressor{CompressNone, CompressZstd, CompressS2} {
		c := Codec{QuantInt4, comp}
		enc, _ := NewEncoder(c)
		dec, _ := NewDecoder(c)
		raw, _ := NewEncoder(Codec{QuantInt4, CompressNone})
		b := raw.Encode(nil, x[:999], nil)
		b[len(b)-1] |= 0x10
		if comp != CompressNone {
			// Re-frame the bad raw bytes: the compressor's input is the shuffled layout.
			shuf := make([]byte, len(b))
			shuffle(QuantInt4, shuf, b, 999)
			switch comp {
			case CompressZstd:
				b = enc.zenc.EncodeAll(shuf, nil)
			default:
				b = s2.Encode(nil, shuf)
			}
		}
		if err := dec.Decode(make([]float32, 999), b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%v, padding nibble set: err = %v, want ErrCorrupt", c, err)
		}
	}
}

func TestParseCodec(t *testing.T) {
	for _, tc := range []struct {
		q, c string
		want Codec
		ok   bool
	}{
		{"none", "", Codec{}, true},
		{"bf16", "zstd", Codec{QuantBF16, CompressZstd}, true},
		{"int8", "s2", Codec{QuantInt8, CompressS2}, true},
		{"int8", "none", Codec{QuantInt8, CompressNone}, true},
		{"int4", "zstd", Codec{QuantInt4, CompressZstd}, true},
		{"int4", "", Codec{QuantInt4, CompressNone}, true},
		{"fp8", "", Codec{}, false},
		{"none", "gzip", Codec{}, false},
	} {
		got, err := ParseCodec(tc.q, tc.c)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseCodec(%q, %q) = %v, %v; want %v, ok %v", tc.q, tc.c, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder: an error or values, never a panic, and
// never more memory than the expected piece.
func FuzzDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range allCodecs() {
		enc, _ := NewEncoder(c)
		x := gradient(rng, 300)
		f.Add(uint8(c.Quant), uint8(c.Compressor), uint16(300), enc.Encode(nil, x, nil))
	}
	f.Fuzz(func(t *testing.T, q, comp uint8, n uint16, b []byte) {
		c := Codec{Quant(int(q) % len(quantNames)), Compressor(int(comp) % len(compressorNames))}
		dec, err := NewDecoder(c)
		if err != nil {
			t.Fatal(err)
		}
		y := make([]float32, n)
		if err := dec.Decode(y, b); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error not wrapping ErrCorrupt: %v", err)
		}
		if cap(dec.raw) > c.rawSize(int(n)) {
			t.Fatalf("decoder holds %d bytes for a %d-byte piece", cap(dec.raw), c.rawSize(int(n)))
		}
	})
}

// FuzzRoundTrip checks that every codec decodes what it encoded within its error bound.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(0), uint8(1), []byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, q, comp uint8, b []byte) {
		c := Codec{Quant(int(q) % len(quantNames)), Compressor(int(comp) % len(compressorNames))}
		x := make([]float32, len(b)/4)
		for i := range x {
			v := math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || math.Abs(float64(v)) > 1e30 {
				v = 1
			}
			x[i] = v
		}
		enc, _ := NewEncoder(c)
		dec, _ := NewDecoder(c)
		y := make([]float32, len(x))
		if err := dec.Decode(y, enc.Encode(nil, x, nil)); err != nil {
			t.Fatal(err)
		}
		for i := range x {
			if e := math.Abs(float64(x[i] - y[i])); e > maxCodecError(c.Quant, x, i) {
				t.Fatalf("%v [%d]: %g → %g", c, i, x[i], y[i])
			}
		}
	})
}

// TestSumInto: the vector kernel adds exactly as the scalar loop, at every alignment of the
// received bytes and the output, in place or not.
func TestSumInto(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{0, 1, 31, 32, 33, 100, 1000} {
		for _, off := range []int{0, 1, 3} {
			a, b := gradient(rng, n), gradient(rng, n)
			yb := make([]byte, 4*n+off)[off:]
			for i, v := range b {
				binary.LittleEndian.PutUint32(yb[4*i:], math.Float32bits(v))
			}
			out := make([]byte, 4*n+off)[off:]
			sumInto(out, a, yb)
			got := append([]float32(nil), a...)
			addBytes(got, yb)
			for i := range a {
				want := math.Float32bits(a[i] + b[i])
				if o := binary.LittleEndian.Uint32(out[4*i:]); o != want || math.Float32bits(got[i]) != want {
					t.Fatalf("n=%d off=%d [%d]: sum %g, in place %g, want %g", n, off, i,
						math.Float32frombits(o), got[i], math.Float32frombits(want))
				}
			}
		}
	}
}

func BenchmarkAddBytes(b *testing.B) {
	dst, src := make([]float32, 64<<10), make([]byte, 4<<16)
	b.SetBytes(4 << 16)
	for b.Loop() {
		addBytes(dst, src)
	}
}
