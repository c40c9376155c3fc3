package safetensors

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// raw assembles a file from a header and data section, without padding.
func raw(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

// TestGolden builds the expected bytes by hand from the format description
// and checks that Encode produces exactly them and Decode reads them back.
func TestGolden(t *testing.T) {
	f := &File{Metadata: map[string]string{"step": "7"}}
	if err := f.AddU8("b", []int{3}, []uint8{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := f.AddF32("a", []int{2}, []float32{1, -2}); err != nil {
		t.Fatal(err)
	}
	if err := f.AddF64("c", nil, []float64{0.5}); err != nil {
		t.Fatal(err)
	}

	// Layout: by decreasing element size, then name: c (F64), a (F32), b (U8).
	data := []byte{
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f, // c = 0.5
		0x00, 0x00, 0x80, 0x3f, // a[0] = 1
		0x00, 0x00, 0x00, 0xc0, // a[1] = -2
		0x01, 0x02, 0x03, // b
	}
	sum := sha256.Sum256(data)
	header := `{"__metadata__":{"checksum":"sha256","sha256":"` + hex.EncodeToString(sum[:]) + `","step":"7"},` +
		`"c":{"dtype":"F64","shape":[],"data_offsets":[0,8]},` +
		`"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},` +
		`"b":{"dtype":"U8","shape":[3],"data_offsets":[16,19]}}`
	for len(header)%8 != 0 {
		header += " "
	}
	want := raw(header, data)

	got := encode(t, f)
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode:\n got %q\nwant %q", got, want)
	}
	d, err := Decode(want)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	var names []string
	for _, tt := range d.Tensors {
		names = append(names, tt.Name)
	}
	if !slices.Equal(names, []string{"c", "a", "b"}) {
		t.Errorf("decoded order %v, want file order [c a b]", names)
	}
	sameContent(t, d, f)
}

// TestDecodeReferenceVector decodes the serialized example from the
// reference implementation's tests: unpadded header, no metadata.
func TestDecodeReferenceVector(t *testing.T) {
	b := []byte("<\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}" +
		"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	v, shape, err := f.I32("test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(shape, []int{2, 2}) || !slices.Equal(v, []int32{0, 0, 0, 0}) || f.Metadata != nil {
		t.Errorf("got %v %v metadata %v", shape, v, f.Metadata)
	}
}

// Headers other writers may produce, all valid.
func TestDecodeAccepts(t *testing.T) {
	d8 := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	tests := []struct {
		name   string
		file   []byte
		shapes map[string][]int
		meta   map[string]string
	}{
		{"empty header", raw(`{}`, nil), map[string][]int{}, nil},
		{"empty metadata", raw(`{"__metadata__":{}}`, nil), map[string][]int{}, map[string]string{}},
		{"whitespace padding", raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}} \t\r\n  ", d8),
			map[string][]int{"a": {8}}, nil},
		{"inner whitespace and field order", raw(`{ "a" : { "data_offsets" : [ 4 , 8 ] , "shape" : [ 1 ] , "dtype" : "F32" } ,
			"b" : { "shape" : [ ] , "dtype" : "I32" , "data_offsets" : [ 0 , 4 ] } }`, d8),
			map[string][]int{"a": {1}, "b": {}}, nil},
		{"metadata last", raw(`{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"__metadata__":{"k":"v","e":"\u00e9\n"}}`, d8),
			map[string][]int{"a": {1}}, map[string]string{"k": "v", "e": "é\n"}},
		{"zero-size at end and start", raw(`{"z":{"dtype":"F64","shape":[0,5],"data_offsets":[8,8]},"y":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U16","shape":[2,2],"data_offsets":[0,8]}}`, d8),
			map[string][]int{"z": {0, 5}, "y": {0}, "a": {2, 2}}, nil},
		{"sha256 without checksum key", raw(`{"__metadata__":{"sha256":"`+sha256Hex(d8)+`"},"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, d8),
			map[string][]int{"a": {8}}, map[string]string{"sha256": sha256Hex(d8)}},
		{"upper-case sha256", raw(`{"__metadata__":{"checksum":"sha256","sha256":"`+strings.ToUpper(sha256Hex(d8))+`"},"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, d8),
			map[string][]int{"a": {8}}, map[string]string{"checksum": "sha256", "sha256": strings.ToUpper(sha256Hex(d8))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode(tc.file)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got := map[string][]int{}
			for _, tt := range f.Tensors {
				got[tt.Name] = tt.Shape
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.shapes) {
				t.Errorf("tensors %v, want %v", got, tc.shapes)
			}
			if fmt.Sprint(f.Metadata) != fmt.Sprint(tc.meta) || (f.Metadata == nil) != (tc.meta == nil) {
				t.Errorf("metadata %#v, want %#v", f.Metadata, tc.meta)
			}
		})
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestDecodeRejects(t *testing.T) {
	d8 := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	u8 := func(name string, shape string, begin, end int64) string {
		return fmt.Sprintf(`%q:{"dtype":"U8","shape":%s,"data_offsets":[%d,%d]}`, name, shape, begin, end)
	}
	valid := encode(t, sampleFile(t, 3))
	flipped := slices.Clone(valid)
	flipped[len(flipped)-1] ^= 1
	headerFlip := slices.Clone(valid)
	headerFlip[8] = '['
	bigLen := binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1)
	hugeLen := binary.LittleEndian.AppendUint64(nil, ^uint64(0))

	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty input", nil, "too short"},
		{"7 bytes", []byte{2, 0, 0, 0, 0, 0, 0}, "too short"},
		{"header over limit", append(bigLen, "{}"...), "exceeds the 100000000-byte limit"},
		{"header length max uint64", append(hugeLen, "{}"...), "exceeds the 100000000-byte limit"},
		{"header past end", append(binary.LittleEndian.AppendUint64(nil, 3), "{}"...), "exceeds the 2 bytes that follow it (truncated?)"},
		{"empty header", raw("", nil), "does not start with '{'"},
		{"array header", raw("[]", nil), "does not start with '{'"},
		{"leading space", raw(" {}", nil), "does not start with '{'"},
		{"invalid utf-8", raw("{\"\xff\":1}", nil), "not valid UTF-8"},
		{"unterminated", raw(`{"a":`, nil), `tensor "a": unexpected end of header`},
		{"unterminated array", raw(`{"a":{"shape":[1`, nil), "shape: unexpected end of header"},
		{"missing colon", raw(`{"a" "b"}`, nil), "after object key"},
		{"trailing garbage", raw(`{}x`, nil), `unexpected 'x' after the closing '}'`},
		{"second object", raw(`{}{}`, nil), `unexpected '{' after the closing '}'`},
		{"trailing NUL padding", raw("{}\x00", nil), `unexpected '\x00'`},
		{"trailing data", raw(`{}`, []byte{0}), "1 trailing bytes after the last tensor"},
		{"trailing data after tensor", raw(`{`+u8("a", "[7]", 0, 7)+`}`, d8), "1 trailing bytes"},
		{"duplicate tensor", raw(`{`+u8("a", "[4]", 0, 4)+`,`+u8("a", "[4]", 4, 8)+`}`, d8), `duplicate key "a"`},
		{"duplicate metadata", raw(`{"__metadata__":{},"__metadata__":{}}`, nil), `duplicate key "__metadata__"`},
		{"metadata number", raw(`{"__metadata__":{"step":1}}`, nil), `"step": value is the number 1, not a string`},
		{"metadata null value", raw(`{"__metadata__":{"k":null}}`, nil), "value is null, not a string"},
		{"metadata nested", raw(`{"__metadata__":{"k":{"x":"y"}}}`, nil), "value is an object ('{'), not a string"},
		{"metadata array", raw(`{"__metadata__":["k"]}`, nil), "__metadata__: got an array ('['), want '{'"},
		{"metadata string", raw(`{"__metadata__":"k"}`, nil), `__metadata__: got the string "k", want '{'`},
		{"metadata null", raw(`{"__metadata__":null}`, nil), "__metadata__: got null, want '{'"},
		{"metadata duplicate key", raw(`{"__metadata__":{"k":"a","k":"b"}}`, nil), `__metadata__: duplicate key "k"`},
		{"empty tensor name", raw(`{`+u8("", "[8]", 0, 8)+`}`, d8), "empty name"},
		{"tensor not object", raw(`{"a":1}`, nil), `tensor "a": got the number 1, want '{'`},
		{"unknown dtype", raw(`{"a":{"dtype":"F8_E5M2","shape":[8],"data_offsets":[0,8]}}`, d8), `unsupported dtype "F8_E5M2"`},
		{"lower-case dtype", raw(`{"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}`, d8), `unsupported dtype "f32"`},
		{"dtype not string", raw(`{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}`, d8), "dtype is the number 4, not a string"},
		{"missing dtype", raw(`{"a":{"shape":[8],"data_offsets":[0,8]}}`, d8), "missing dtype"},
		{"missing shape", raw(`{"a":{"dtype":"U8","data_offsets":[0,8]}}`, d8), "missing shape"},
		{"missing offsets", raw(`{"a":{"dtype":"U8","shape":[8]}}`, d8), "missing data_offsets"},
		{"unknown field", raw(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8],"stride":[1]}}`, d8), `unknown field "stride"`},
		{"duplicate field", raw(`{"a":{"dtype":"U8","dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, d8), `duplicate field "dtype"`},
		{"shape not array", raw(`{"a":{"dtype":"U8","shape":8,"data_offsets":[0,8]}}`, d8), "shape: got the number 8, want '['"},
		{"negative dim", raw(`{`+u8("a", "[-8]", 0, 8)+`}`, d8), "-8 is not a non-negative 64-bit integer"},
		{"fractional dim", raw(`{`+u8("a", "[8.0]", 0, 8)+`}`, d8), "8.0 is not a non-negative 64-bit integer"},
		{"exponent dim", raw(`{`+u8("a", "[8e0]", 0, 8)+`}`, d8), "8e0 is not a non-negative 64-bit integer"},
		{"dim beyond uint64", raw(`{`+u8("a", "[18446744073709551616]", 0, 8)+`}`, d8), "is not a non-negative 64-bit integer"},
		{"dim beyond int", raw(`{`+u8("a", "[9223372036854775808]", 0, 8)+`}`, d8), "dimension 9223372036854775808 too large"},
		{"dim string", raw(`{`+u8("a", `["8"]`, 0, 8)+`}`, d8), `element is the string "8", not a number`},
		{"shape product overflow", raw(`{`+u8("a", "[4294967296,4294967296,2]", 0, 8)+`}`, d8), "overflows"},
		{"shape overflow hidden by zero", raw(`{`+u8("a", "[4294967296,4294967296,4294967296,0]", 0, 0)+`}`, nil), "overflows"},
		{"byte length overflow", raw(`{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}`, d8), "overflows"},
		{"rank over limit", raw(`{`+u8("a", "["+strings.Repeat("1,", MaxRank)+"1]", 0, 1)+`}`, d8[:1]), "more than 64 numbers"},
		{"one offset", raw(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[8]}}`, d8), "data_offsets has 1 numbers, want 2"},
		{"three offsets", raw(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8,8]}}`, d8), "data_offsets: more than 2 numbers"},
		{"negative offset", raw(`{`+u8("a", "[8]", -1, 7)+`}`, d8), "-1 is not a non-negative 64-bit integer"},
		{"reversed offsets", raw(`{`+u8("a", "[0]", 8, 0)+`}`, d8), "data_offsets [8, 0] are reversed"},
		{"gap at start", raw(`{`+u8("a", "[4]", 4, 8)+`}`, d8), "gap of 4 bytes before"},
		{"gap between", raw(`{`+u8("a", "[2]", 0, 2)+`,`+u8("b", "[4]", 4, 8)+`}`, d8), `tensor "b": gap of 2 bytes`},
		{"overlap", raw(`{`+u8("a", "[6]", 0, 6)+`,`+u8("b", "[4]", 4, 8)+`}`, d8), `tensor "b": data_offsets [4, 8] overlap the previous tensor, which ends at 6`},
		{"same range twice", raw(`{`+u8("a", "[8]", 0, 8)+`,`+u8("b", "[8]", 0, 8)+`}`, d8), "overlap"},
		{"past end", raw(`{`+u8("a", "[9]", 0, 9)+`}`, d8), "run past the 8-byte data section (truncated?)"},
		{"huge offsets", raw(`{`+u8("a", "[0]", 0, 0)+`,`+u8("b", "[8]", 0, 8)+`,"c":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}}`, d8), "gap"},
		{"size mismatch", raw(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, d8), "F32 shape [3] needs 12 bytes, data_offsets [0, 8] span 8"},
		{"scalar mismatch", raw(`{"a":{"dtype":"F32","shape":[],"data_offsets":[0,8]}}`, d8), "F32 shape [] needs 4 bytes"},
		{"checksum mismatch", flipped, "checksum mismatch"},
		{"header damaged", headerFlip, "does not start with '{'"},
		{"truncated by one byte", valid[:len(valid)-1], "(truncated?)"},
		{"truncated in header", valid[:40], "(truncated?)"},
		{"unknown checksum algorithm", raw(`{"__metadata__":{"checksum":"crc32","sha256":"`+sha256Hex(nil)+`"}}`, nil), `"checksum" names unknown algorithm "crc32"`},
		{"declared checksum missing", raw(`{"__metadata__":{"checksum":"sha256"}}`, nil), `declares a sha256 checksum but has no "sha256" entry`},
		{"short sha256", raw(`{"__metadata__":{"checksum":"sha256","sha256":"abc"}}`, nil), "is 3 characters, not 64 hex digits"},
		{"non-hex sha256", raw(`{"__metadata__":{"checksum":"sha256","sha256":"`+strings.Repeat("zz", 32)+`"}}`, nil), "is not hex"},
		{"sha256 of other data", raw(`{"__metadata__":{"sha256":"`+sha256Hex([]byte("x"))+`"},`+u8("a", "[8]", 0, 8)+`}`, d8), "checksum mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode(tc.file)
			if err == nil {
				t.Fatalf("Decode succeeded with %d tensors, want an error mentioning %q", len(f.Tensors), tc.want)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("error %v does not wrap ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}
