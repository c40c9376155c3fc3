package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

// FuzzDecode checks that Decode never panics, that every error wraps
// ErrCorrupt, and that whatever it accepts is well formed and survives an
// Encode/Decode round trip.
func FuzzDecode(f *testing.F) {
	tensors := &File{Metadata: map[string]string{"step": "3", "config": `{"a":[1,2]}`}}
	for _, err := range []error{
		tensors.AddF32("w", []int{2, 3}, []float32{1, 2, 3, 4, 5, 6}),
		tensors.AddF64("s", nil, []float64{-1}),
		tensors.AddI64("z", []int{0, 4}, nil),
		tensors.AddU8("b", []int{3}, []uint8{7, 8, 9}),
		tensors.AddI32("i", []int{1, 1, 2}, []int32{-5, 5}),
	} {
		if err != nil {
			f.Fatal(err)
		}
	}
	valid := [][]byte{
		encode(f, &File{}),
		encode(f, tensors),
		encode(f, sampleFile(f, 1)),
		[]byte("<\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}" +
			"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		raw(`{"__metadata__":{"k":"v"},"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, nil),
	}
	for _, v := range valid {
		f.Add(v)
		f.Add(v[:len(v)-1])
		f.Add(v[:len(v)/2])
		flipped := slices.Clone(v)
		flipped[len(v)-1] ^= 0x80
		f.Add(flipped)
		longer := slices.Clone(v)
		binary.LittleEndian.PutUint64(longer, binary.LittleEndian.Uint64(v)+8)
		f.Add(longer)
	}
	f.Add([]byte{})
	f.Add(raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, nil))
	f.Add(raw(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, []byte{1, 2}))

	f.Fuzz(func(t *testing.T, b []byte) {
		in := slices.Clone(b)
		got, err := Decode(b)
		if !bytes.Equal(in, b) {
			t.Fatal("Decode modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, tt := range got.Tensors {
			if err := checkTensor(tt); err != nil {
				t.Fatalf("accepted a malformed tensor: %v", err)
			}
			if seen[tt.Name] {
				t.Fatalf("accepted duplicate tensor %q", tt.Name)
			}
			seen[tt.Name] = true
		}
		again, err := Decode(encode(t, got))
		if err != nil {
			t.Fatalf("re-encoded file does not decode: %v", err)
		}
		sameContent(t, again, got)
	})
}
