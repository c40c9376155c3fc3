package safetensors

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// MaxHeaderSize is the largest JSON header accepted, as in the reference
// implementation: it keeps a damaged length prefix from driving an
// allocation of the claimed size.
const MaxHeaderSize = 100_000_000

// ErrCorrupt is wrapped by every error about malformed or damaged content
// (as opposed to I/O errors), so that callers can skip such files.
var ErrCorrupt = errors.New("corrupt safetensors file")

// corruptError says what is wrong with a file and, once known, which file.
type corruptError struct {
	path   string
	reason string
}

func (e *corruptError) Error() string {
	if e.path == "" {
		return "safetensors: corrupt: " + e.reason
	}
	return "safetensors: " + e.path + " is corrupt: " + e.reason
}

func (e *corruptError) Unwrap() error { return ErrCorrupt }

func corruptf(format string, a ...any) error {
	return &corruptError{reason: fmt.Sprintf(format, a...)}
}

// Decode parses a safetensors file held in b, verifying the layout and, when
// the metadata carries one, the SHA-256 of the data section. The tensors'
// Data alias b. Tensors are returned in file order.
func Decode(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, corruptf("file is %d bytes, too short for the 8-byte header length (truncated?)", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxHeaderSize {
		return nil, corruptf("header length %d exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	if n > uint64(len(b)-8) {
		return nil, corruptf("header length %d exceeds the %d bytes that follow it (truncated?)", n, len(b)-8)
	}
	header, data := b[8:8+n], b[8+n:]
	entries, meta, err := parseHeader(header)
	if err != nil {
		return nil, err
	}

	// Stable order for equal offsets (zero-size tensors) makes the result
	// independent of the header's key order.
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.begin, b.begin), cmp.Compare(a.end, b.end), cmp.Compare(a.name, b.name))
	})
	f := &File{Tensors: make([]Tensor, 0, len(entries)), Metadata: meta}
	var pos uint64
	for _, e := range entries {
		switch {
		case e.begin > e.end:
			return nil, corruptf("tensor %q: data_offsets [%d, %d] are reversed", e.name, e.begin, e.end)
		case e.begin < pos:
			return nil, corruptf("tensor %q: data_offsets [%d, %d] overlap the previous tensor, which ends at %d", e.name, e.begin, e.end, pos)
		case e.begin > pos:
			return nil, corruptf("tensor %q: gap of %d bytes before data_offsets [%d, %d]", e.name, e.begin-pos, e.begin, e.end)
		case e.end > uint64(len(data)):
			return nil, corruptf("tensor %q: data_offsets [%d, %d] run past the %d-byte data section (truncated?)", e.name, e.begin, e.end, len(data))
		}
		want, err := byteLength(e.shape, e.dtype.Size())
		if err != nil {
			return nil, corruptf("tensor %q: %v", e.name, err)
		}
		if want != e.end-e.begin {
			return nil, corruptf("tensor %q: %s shape %v needs %d bytes, data_offsets [%d, %d] span %d", e.name, e.dtype, e.shape, want, e.begin, e.end, e.end-e.begin)
		}
		f.Tensors = append(f.Tensors, Tensor{Name: e.name, DType: e.dtype, Shape: e.shape, Data: data[e.begin:e.end:e.end]})
		pos = e.end
	}
	if pos != uint64(len(data)) {
		return nil, corruptf("%d trailing bytes after the last tensor", uint64(len(data))-pos)
	}
	if err := verifyChecksum(meta, data); err != nil {
		return nil, err
	}
	return f, nil
}

func verifyChecksum(meta map[string]string, data []byte) error {
	algo, declared := meta[MetaChecksum]
	want, present := meta[MetaSHA256]
	if declared && algo != checksumSHA256 {
		return corruptf("metadata %q names unknown algorithm %q", MetaChecksum, algo)
	}
	if declared && !present {
		return corruptf("metadata declares a %s checksum but has no %q entry", algo, MetaSHA256)
	}
	if !present {
		return nil
	}
	if len(want) != 2*sha256.Size {
		return corruptf("metadata %q is %d characters, not %d hex digits", MetaSHA256, len(want), 2*sha256.Size)
	}
	wantSum, err := hex.DecodeString(want)
	if err != nil {
		return corruptf("metadata %q is not hex: %v", MetaSHA256, err)
	}
	got := sha256.Sum256(data)
	if !bytes.Equal(got[:], wantSum) {
		return corruptf("checksum mismatch: metadata %q is %s, the data section hashes to %x", MetaSHA256, want, got)
	}
	return nil
}

// entry is one tensor's header record.
type entry struct {
	name       string
	dtype      DType
	shape      []int
	begin, end uint64
}

// parseHeader walks the JSON token by token, because encoding/json's
// Unmarshal silently keeps the last of duplicate keys and a duplicate tensor
// name must be refused.
func parseHeader(h []byte) ([]entry, map[string]string, error) {
	if len(h) == 0 || h[0] != '{' {
		return nil, nil, corruptf("header does not start with '{'")
	}
	if !utf8.Valid(h) {
		return nil, nil, corruptf("header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(h))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return nil, nil, corruptf("header: %v", tokenErr(err))
	}
	var (
		entries []entry
		meta    map[string]string
		seen    = make(map[string]bool)
	)
	for dec.More() {
		name, err := key(dec)
		if err != nil {
			return nil, nil, err
		}
		if seen[name] {
			return nil, nil, corruptf("header: duplicate key %q", name)
		}
		seen[name] = true
		if name == metadataKey {
			if meta, err = parseMetadata(dec); err != nil {
				return nil, nil, err
			}
			continue
		}
		if name == "" {
			return nil, nil, corruptf("header: tensor with an empty name")
		}
		e, err := parseEntry(dec, name)
		if err != nil {
			return nil, nil, err
		}
		entries = append(entries, e)
	}
	if err := delim(dec, '}', "header"); err != nil {
		return nil, nil, err
	}
	// Writers pad the header to a multiple of 8 with spaces; serde_json, and
	// so the reference reader, accepts any trailing JSON whitespace.
	for _, c := range h[dec.InputOffset():] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return nil, nil, corruptf("header: unexpected %q after the closing '}'", c)
		}
	}
	return entries, meta, nil
}

func parseMetadata(dec *json.Decoder) (map[string]string, error) {
	if err := delim(dec, '{', metadataKey); err != nil {
		return nil, err
	}
	meta := make(map[string]string)
	for dec.More() {
		k, err := key(dec)
		if err != nil {
			return nil, err
		}
		if _, dup := meta[k]; dup {
			return nil, corruptf("%s: duplicate key %q", metadataKey, k)
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, corruptf("%s %q: %v", metadataKey, k, tokenErr(err))
		}
		v, ok := tok.(string)
		if !ok {
			return nil, corruptf("%s %q: value is %s, not a string", metadataKey, k, describe(tok))
		}
		meta[k] = v
	}
	return meta, delim(dec, '}', metadataKey)
}

func parseEntry(dec *json.Decoder, name string) (entry, error) {
	e := entry{name: name}
	fail := func(format string, a ...any) (entry, error) {
		return entry{}, corruptf("tensor %q: %s", name, fmt.Sprintf(format, a...))
	}
	if err := delim(dec, '{', fmt.Sprintf("tensor %q", name)); err != nil {
		return entry{}, err
	}
	var haveDType, haveShape, haveOffsets bool
	for dec.More() {
		field, err := key(dec)
		if err != nil {
			return entry{}, err
		}
		switch field {
		case "dtype":
			if haveDType {
				return fail("duplicate field %q", field)
			}
			haveDType = true
			tok, err := dec.Token()
			if err != nil {
				return fail("dtype: %v", tokenErr(err))
			}
			s, ok := tok.(string)
			if !ok {
				return fail("dtype is %s, not a string", describe(tok))
			}
			e.dtype = DType(s)
			if e.dtype.Size() == 0 {
				return fail("unsupported dtype %q", s)
			}
		case "shape":
			if haveShape {
				return fail("duplicate field %q", field)
			}
			haveShape = true
			dims, err := uints(dec, name, field, MaxRank)
			if err != nil {
				return entry{}, err
			}
			e.shape = make([]int, len(dims))
			for i, d := range dims {
				if d > math.MaxInt {
					return fail("dimension %d too large", d)
				}
				e.shape[i] = int(d)
			}
		case "data_offsets":
			if haveOffsets {
				return fail("duplicate field %q", field)
			}
			haveOffsets = true
			off, err := uints(dec, name, field, 2)
			if err != nil {
				return entry{}, err
			}
			if len(off) != 2 {
				return fail("data_offsets has %d numbers, want 2", len(off))
			}
			e.begin, e.end = off[0], off[1]
		default:
			return fail("unknown field %q", field)
		}
	}
	if err := delim(dec, '}', fmt.Sprintf("tensor %q", name)); err != nil {
		return entry{}, err
	}
	switch {
	case !haveDType:
		return fail("missing dtype")
	case !haveShape:
		return fail("missing shape")
	case !haveOffsets:
		return fail("missing data_offsets")
	}
	return e, nil
}

// uints reads an array of at most max non-negative integers.
func uints(dec *json.Decoder, name, field string, max int) ([]uint64, error) {
	where := fmt.Sprintf("tensor %q: %s", name, field)
	if err := delim(dec, '[', where); err != nil {
		return nil, err
	}
	out := []uint64{}
	for dec.More() {
		if len(out) == max {
			return nil, corruptf("%s: more than %d numbers", where, max)
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, corruptf("%s: %v", where, tokenErr(err))
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, corruptf("%s: element is %s, not a number", where, describe(tok))
		}
		u, err := strconv.ParseUint(string(num), 10, 64)
		if err != nil {
			return nil, corruptf("%s: %s is not a non-negative 64-bit integer", where, num)
		}
		out = append(out, u)
	}
	return out, delim(dec, ']', where)
}

// key reads an object key; json.Decoder has already checked that the token
// in key position is a string.
func key(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", corruptf("header: %v", tokenErr(err))
	}
	s, ok := tok.(string)
	if !ok {
		return "", corruptf("header: key is %s, not a string", describe(tok))
	}
	return s, nil
}

func delim(dec *json.Decoder, want json.Delim, where string) error {
	tok, err := dec.Token()
	if err != nil {
		return corruptf("%s: %v", where, tokenErr(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return corruptf("%s: got %s, want '%c'", where, describe(tok), want)
	}
	return nil
}

// tokenErr makes json.Decoder's bare io.EOF say where the input ended.
func tokenErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("unexpected end of header")
	}
	return err
}

// describe names a JSON token for an error message.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{', '}':
			return fmt.Sprintf("an object ('%c')", v)
		default:
			return fmt.Sprintf("an array ('%c')", v)
		}
	case string:
		return fmt.Sprintf("the string %q", v)
	case json.Number:
		return "the number " + string(v)
	case bool:
		return fmt.Sprintf("the boolean %t", v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}
