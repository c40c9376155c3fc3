package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// randomTensor makes a tensor of the given dtype and shape with
// pseudo-random content determined by seed.
func randomTensor(t testing.TB, name string, d DType, shape []int, seed uint64) Tensor {
	t.Helper()
	n, err := byteLength(shape, d.Size())
	if err != nil {
		t.Fatalf("byteLength(%v): %v", shape, err)
	}
	r := rand.New(rand.NewPCG(seed, uint64(len(name))))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return Tensor{Name: name, DType: d, Shape: shape, Data: data}
}

// sampleFile is a small checkpoint-like file whose content depends on seed.
func sampleFile(t testing.TB, seed uint64) *File {
	t.Helper()
	f := &File{Metadata: map[string]string{"step": "100", "format": "ncsn/1"}}
	for i, tc := range []struct {
		name  string
		shape []int
	}{
		{"param/conv1.w", []int{8, 3, 3, 3}},
		{"param/conv1.b", []int{8}},
		{"ema/conv1.w", []int{8, 3, 3, 3}},
		{"adam_m/conv1.b", []int{8}},
	} {
		if err := f.Add(randomTensor(t, tc.name, F32, tc.shape, seed+uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func encode(t testing.TB, f *File) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Encode(&buf, f); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return buf.Bytes()
}

// sameContent fails unless got holds exactly want's tensors (in any order)
// and want's metadata plus the checksum entries Encode adds.
func sameContent(t *testing.T, got, want *File) {
	t.Helper()
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("got %d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for _, w := range want.Tensors {
		g, ok := got.Tensor(w.Name)
		if !ok {
			t.Fatalf("tensor %q missing", w.Name)
		}
		if g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("tensor %q: got %s %v (%d bytes), want %s %v (%d bytes)",
				w.Name, g.DType, g.Shape, len(g.Data), w.DType, w.Shape, len(w.Data))
		}
	}
	for k, v := range want.Metadata {
		if k == MetaChecksum || k == MetaSHA256 {
			continue
		}
		if got.Metadata[k] != v {
			t.Errorf("metadata %q = %q, want %q", k, got.Metadata[k], v)
		}
	}
	if got.Metadata[MetaChecksum] != "sha256" || len(got.Metadata[MetaSHA256]) != 64 {
		t.Errorf("checksum metadata missing: %v", got.Metadata)
	}
	extra := len(got.Metadata) - 2
	for k := range want.Metadata {
		if k != MetaChecksum && k != MetaSHA256 {
			extra--
		}
	}
	if extra != 0 {
		t.Errorf("metadata %v has entries beyond %v and the checksum", got.Metadata, want.Metadata)
	}
}

func TestRoundTrip(t *testing.T) {
	all := []DType{BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64}
	var allDTypes []Tensor
	for i, d := range all {
		allDTypes = append(allDTypes, randomTensor(t, "t_"+string(d), d, []int{i + 1, 3}, uint64(i)))
	}
	tests := []struct {
		name    string
		tensors []Tensor
		meta    map[string]string
	}{
		{name: "empty"},
		{name: "metadata only", meta: map[string]string{"step": "0"}},
		{name: "one f32", tensors: []Tensor{randomTensor(t, "w", F32, []int{2, 3}, 1)}},
		{name: "scalar", tensors: []Tensor{randomTensor(t, "s", F64, []int{}, 2)}},
		{name: "zero-size", tensors: []Tensor{
			randomTensor(t, "z0", F32, []int{0}, 3),
			randomTensor(t, "z1", I64, []int{3, 0, 2}, 4),
			randomTensor(t, "a", F32, []int{5}, 5),
			randomTensor(t, "z2", U8, []int{0, 0}, 6),
		}},
		{name: "all dtypes", tensors: allDTypes},
		{
			name: "escapes",
			tensors: []Tensor{
				randomTensor(t, "quote\"back\\slash", F32, []int{1}, 7),
				randomTensor(t, "ctl\n\t\x01\x1f\x7f", F32, []int{1}, 8),
				randomTensor(t, "<html>&ünïcödé€\u2028", F32, []int{1}, 9),
			},
			meta: map[string]string{
				"config":  `{"lr": 1e-4, "sigmas": [50, 0.01]}`,
				"ctl\x00": "line\nbreak\r\b\f",
				"":        "empty key",
				"unicode": "σ_max→∞",
			},
		},
		{name: "caller checksum overwritten", tensors: []Tensor{randomTensor(t, "w", F32, []int{4}, 10)},
			meta: map[string]string{MetaSHA256: "bogus", MetaChecksum: "md5"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &File{Metadata: tc.meta}
			for _, tt := range tc.tensors {
				if err := f.Add(tt); err != nil {
					t.Fatalf("Add: %v", err)
				}
			}
			b := encode(t, f)
			n := binary.LittleEndian.Uint64(b)
			if n%8 != 0 {
				t.Errorf("header length %d is not a multiple of 8", n)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			sameContent(t, got, f)

			// Every tensor starts aligned to its element size; decoded
			// tensors are contiguous in file order.
			off := 8 + int(n)
			for _, tt := range got.Tensors {
				if off%tt.DType.Size() != 0 {
					t.Errorf("tensor %q at file offset %d is not %d-aligned", tt.Name, off, tt.DType.Size())
				}
				off += len(tt.Data)
			}
			if off != len(b) {
				t.Errorf("tensors end at %d, file is %d bytes", off, len(b))
			}

			// The bytes depend on content only: re-encoding the decoded file
			// or encoding the tensors in another order gives the same bytes.
			if again := encode(t, got); !bytes.Equal(again, b) {
				t.Error("re-encoding the decoded file changed the bytes")
			}
			rev := &File{Metadata: tc.meta, Tensors: slices.Clone(f.Tensors)}
			slices.Reverse(rev.Tensors)
			if again := encode(t, rev); !bytes.Equal(again, b) {
				t.Error("encoding depends on the order of File.Tensors")
			}
		})
	}
}

func TestEncodeDoesNotModifyFile(t *testing.T) {
	f := sampleFile(t, 1)
	before := map[string]string{"step": "100", "format": "ncsn/1"}
	encode(t, f)
	if !reflect.DeepEqual(f.Metadata, before) {
		t.Errorf("Encode changed the metadata to %v", f.Metadata)
	}
}

func TestTypedAccessors(t *testing.T) {
	f := &File{}
	f32 := []float32{0, 1, -2.5, float32(math.Inf(1)), float32(math.Copysign(0, -1)), math.Float32frombits(0x7fc00001), math.MaxFloat32}
	f64 := []float64{math.Pi, math.Inf(-1), math.Float64frombits(0x7ff8000000000123), math.SmallestNonzeroFloat64}
	i64 := []int64{math.MinInt64, -1, 0, math.MaxInt64}
	i32 := []int32{math.MinInt32, 7, math.MaxInt32, 0, 1, 2}
	u8 := []uint8{0, 1, 255}
	for _, err := range []error{
		f.AddF32("f32", []int{7}, f32),
		f.AddF64("f64", []int{2, 2}, f64),
		f.AddI64("i64", []int{4, 1}, i64),
		f.AddI32("i32", []int{2, 1, 3}, i32),
		f.AddU8("u8", []int{3}, u8),
		f.AddF32("empty", []int{2, 0}, nil),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := Decode(encode(t, f))
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, gotShape, wantShape []int, gotBits, wantBits []uint64, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if !slices.Equal(gotShape, wantShape) || !slices.Equal(gotBits, wantBits) {
			t.Errorf("%s: got %v %x, want %v %x", name, gotShape, gotBits, wantShape, wantBits)
		}
	}
	bitsOf := func(n int, at func(int) uint64) []uint64 {
		out := make([]uint64, n)
		for i := range out {
			out[i] = at(i)
		}
		return out
	}
	v32, s, err := got.F32("f32")
	check("f32", s, []int{7}, bitsOf(len(v32), func(i int) uint64 { return uint64(math.Float32bits(v32[i])) }),
		bitsOf(len(f32), func(i int) uint64 { return uint64(math.Float32bits(f32[i])) }), err)
	v64, s, err := got.F64("f64")
	check("f64", s, []int{2, 2}, bitsOf(len(v64), func(i int) uint64 { return math.Float64bits(v64[i]) }),
		bitsOf(len(f64), func(i int) uint64 { return math.Float64bits(f64[i]) }), err)
	vi64, s, err := got.I64("i64")
	check("i64", s, []int{4, 1}, bitsOf(len(vi64), func(i int) uint64 { return uint64(vi64[i]) }),
		bitsOf(len(i64), func(i int) uint64 { return uint64(i64[i]) }), err)
	vi32, s, err := got.I32("i32")
	check("i32", s, []int{2, 1, 3}, bitsOf(len(vi32), func(i int) uint64 { return uint64(vi32[i]) }),
		bitsOf(len(i32), func(i int) uint64 { return uint64(i32[i]) }), err)
	vu8, s, err := got.U8("u8")
	check("u8", s, []int{3}, bitsOf(len(vu8), func(i int) uint64 { return uint64(vu8[i]) }),
		bitsOf(len(u8), func(i int) uint64 { return uint64(u8[i]) }), err)
	ve, s, err := got.F32("empty")
	check("empty", s, []int{2, 0}, bitsOf(len(ve), nil), nil, err)

	// The element bytes are little-endian, as the format requires.
	if tt, _ := got.Tensor("i32"); !bytes.Equal(tt.Data[4:8], []byte{7, 0, 0, 0}) {
		t.Errorf("i32[1] bytes = %x, want 07000000", tt.Data[4:8])
	}

	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"missing", func() error { _, _, err := got.F32("nope"); return err }, `no tensor "nope"`},
		{"wrong dtype", func() error { _, _, err := got.F32("f64"); return err }, `tensor "f64" is F64, not F32`},
		{"wrong dtype int", func() error { _, _, err := got.I64("i32"); return err }, `tensor "i32" is I32, not I64`},
	} {
		if err := tc.call(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestAddRejects(t *testing.T) {
	tests := []struct {
		name string
		add  func(f *File) error
		want string
	}{
		{"too few values", func(f *File) error { return f.AddF32("x", []int{2, 2}, make([]float32, 3)) }, "holds 4 elements, got 3"},
		{"too many values", func(f *File) error { return f.AddU8("x", nil, make([]uint8, 2)) }, "holds 1 elements, got 2"},
		{"negative dim", func(f *File) error { return f.AddF32("x", []int{-1}, nil) }, "negative dimension"},
		{"overflow", func(f *File) error { return f.AddF32("x", []int{1 << 32, 1 << 32}, nil) }, "overflows"},
		{"rank", func(f *File) error { return f.AddF32("x", make([]int, MaxRank+1), nil) }, "rank 65 exceeds"},
		{"duplicate", func(f *File) error { return f.AddF32("w", []int{1}, []float32{1}) }, `duplicate tensor "w"`},
		{"empty name", func(f *File) error { return f.AddF32("", []int{1}, []float32{1}) }, "empty name"},
		{"reserved name", func(f *File) error { return f.AddF32("__metadata__", []int{1}, []float32{1}) }, "reserved"},
		{"bad utf-8 name", func(f *File) error { return f.AddF32("a\xff", []int{1}, []float32{1}) }, "not valid UTF-8"},
		{"unknown dtype", func(f *File) error {
			return f.Add(Tensor{Name: "x", DType: "F8_E4M3", Shape: []int{1}, Data: []byte{0}})
		}, `unsupported dtype "F8_E4M3"`},
		{"data length", func(f *File) error {
			return f.Add(Tensor{Name: "x", DType: F64, Shape: []int{2}, Data: make([]byte, 15)})
		}, "needs 16 bytes, has 15"},
		{"byte overflow", func(f *File) error { return f.Add(Tensor{Name: "x", DType: F64, Shape: []int{1 << 62}}) }, "overflows"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &File{}
			if err := f.AddF32("w", []int{1}, []float32{1}); err != nil {
				t.Fatal(err)
			}
			err := tc.add(f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
			if len(f.Tensors) != 1 {
				t.Errorf("a rejected tensor was added: %d tensors", len(f.Tensors))
			}
		})
	}
}

// Encode revalidates, since File.Tensors can be filled without Add.
func TestEncodeRejects(t *testing.T) {
	ok := Tensor{Name: "w", DType: F32, Shape: []int{1}, Data: make([]byte, 4)}
	tests := []struct {
		name string
		f    *File
		want string
	}{
		{"duplicate", &File{Tensors: []Tensor{ok, ok}}, `duplicate tensor "w"`},
		{"short data", &File{Tensors: []Tensor{{Name: "w", DType: F32, Shape: []int{2}, Data: make([]byte, 4)}}}, "needs 8 bytes, has 4"},
		{"no dtype", &File{Tensors: []Tensor{{Name: "w", Shape: []int{}, Data: nil}}}, "unsupported dtype"},
		{"bad utf-8 metadata", &File{Tensors: []Tensor{ok}, Metadata: map[string]string{"k": "\xc3"}}, "not valid UTF-8"},
		{"bad utf-8 metadata key", &File{Metadata: map[string]string{"\xc3": "v"}}, "not valid UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Encode(&buf, tc.f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
			if errors.Is(err, ErrCorrupt) {
				t.Errorf("a caller's mistake is reported as a corrupt file: %v", err)
			}
			if buf.Len() != 0 {
				t.Errorf("Encode wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

type failWriter struct{ after int }

var errDisk = errors.New("disk on fire")

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.after {
		n := w.after
		w.after = 0
		return n, errDisk
	}
	w.after -= len(p)
	return len(p), nil
}

func TestEncodeWriteError(t *testing.T) {
	f := sampleFile(t, 1)
	size := len(encode(t, f))
	for _, after := range []int{0, 7, 64, size - 1} {
		err := Encode(&failWriter{after: after}, f)
		if !errors.Is(err, errDisk) {
			t.Errorf("failing after %d bytes: error %v, want it to wrap %v", after, err, errDisk)
		}
	}
}
