package safetensors

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Metadata keys written by Encode. MetaChecksum names the algorithm so that a
// file which declares a checksum but lost it (or carries a malformed one) is
// refused rather than silently loaded unverified.
const (
	MetaChecksum = "checksum"
	MetaSHA256   = "sha256"
)

// checksumSHA256 is the only value of MetaChecksum this package knows.
const checksumSHA256 = "sha256"

// Encode writes f to w, adding MetaChecksum and MetaSHA256 (the hex SHA-256
// of the data section) to the written metadata; f itself is not modified.
//
// Tensors are laid out by decreasing element size, then by name, so the
// output depends only on f's content, and every tensor starts at an offset
// that is a multiple of its element size (the header is padded to 8 bytes)
// for readers that map the file.
func Encode(w io.Writer, f *File) error {
	p, err := prepare(f)
	if err != nil {
		return err
	}
	return p.writeTo(w)
}

// prepared is an encoded file not yet written: the header bytes (length
// prefix and padding included) and the tensor data in file order.
type prepared struct {
	header []byte
	data   [][]byte
	size   int64
}

func prepare(f *File) (*prepared, error) {
	order := make([]*Tensor, len(f.Tensors))
	seen := make(map[string]bool, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if err := checkTensor(*t); err != nil {
			return nil, err
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("safetensors: duplicate tensor %q", t.Name)
		}
		seen[t.Name] = true
		order[i] = t
	}
	slices.SortFunc(order, func(a, b *Tensor) int {
		return cmp.Or(cmp.Compare(b.DType.Size(), a.DType.Size()), cmp.Compare(a.Name, b.Name))
	})

	meta := make(map[string]string, len(f.Metadata)+2)
	for k, v := range f.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, fmt.Errorf("safetensors: metadata %q: %q is not valid UTF-8", k, v)
		}
		meta[k] = v
	}
	h := sha256.New()
	for _, t := range order {
		h.Write(t.Data)
	}
	meta[MetaChecksum] = checksumSHA256
	meta[MetaSHA256] = hex.EncodeToString(h.Sum(nil))

	// The header is built by hand rather than with encoding/json so that its
	// bytes match the reference serializer: compact, no HTML escaping,
	// fields in the order dtype, shape, data_offsets.
	b := make([]byte, 8, 256)
	b = append(b, '{')
	b = appendString(b, metadataKey)
	b = append(b, ":{"...)
	for i, k := range slices.Sorted(maps.Keys(meta)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, meta[k])
	}
	b = append(b, '}')
	p := &prepared{data: make([][]byte, len(order))}
	var off uint64
	for i, t := range order {
		b = append(b, ',')
		b = appendString(b, t.Name)
		b = append(b, `:{"dtype":`...)
		b = appendString(b, string(t.DType))
		b = append(b, `,"shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(d), 10)
		}
		b = append(b, `],"data_offsets":[`...)
		b = strconv.AppendUint(b, off, 10)
		b = append(b, ',')
		off += uint64(len(t.Data))
		b = strconv.AppendUint(b, off, 10)
		b = append(b, "]}"...)
		p.data[i] = t.Data
	}
	b = append(b, '}')
	for len(b)%8 != 0 {
		b = append(b, ' ')
	}
	n := len(b) - 8
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: header of %d bytes exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	binary.LittleEndian.PutUint64(b, uint64(n))
	p.header = b
	p.size = int64(len(b)) + int64(off)
	return p, nil
}

func (p *prepared) writeTo(w io.Writer) error {
	if _, err := w.Write(p.header); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	for _, d := range p.data {
		if _, err := w.Write(d); err != nil {
			return fmt.Errorf("safetensors: write data: %w", err)
		}
	}
	return nil
}

// appendString appends s (valid UTF-8) as a JSON string, escaping exactly
// what serde_json escapes.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, `\b`...)
		case c == '\f':
			b = append(b, `\f`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '\r':
			b = append(b, `\r`...)
		case c == '\t':
			b = append(b, `\t`...)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
