package allreduce

import (
	"slices"
	"testing"
)

// TestNames: every name listed parses, to a codec that prints as it was named, and the
// lists cover every codec.
func TestNames(t *testing.T) {
	var seen []Codec
	for _, q := range Quants() {
		for _, c := range Compressors() {
			codec, err := ParseCodec(q, c)
			if err != nil {
				t.Fatalf("ParseCodec(%q, %q): %v", q, c, err)
			}
			if codec.Quant.String() != q || codec.Compressor.String() != c {
				t.Errorf("ParseCodec(%q, %q) = %v", q, c, codec)
			}
			seen = append(seen, codec)
		}
	}
	for _, c := range allCodecs() {
		if !slices.Contains(seen, c) {
			t.Errorf("codec %v has no names", c)
		}
	}
	if q := Quants(); q[0] != "none" || slices.Contains(q, "") {
		t.Errorf("Quants() = %q, want none first", q)
	}
	Quants()[0] = "changed"
	if Quants()[0] != "none" {
		t.Error("Quants returns the package's own slice")
	}
}
