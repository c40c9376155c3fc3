// Package npy owns the NumPy .npy format (version 1.0–3.0) for float32 arrays:
// what `ncsn sample --out FILE.npy` writes and `ncsn eval --samples` reads, so
// that numpy and PyTorch users open ncsn's samples directly and ncsn scores
// theirs. Only little-endian float32 (and, on reading, float64 and uint8,
// converted) in C order is supported.
package npy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/ncsn/ncsn/internal/atomicfile"
)

var magic = []byte("\x93NUMPY")

// MaxValues bounds what Decode allocates: 1<<30 values (4 GiB of float32).
const MaxValues = 1 << 30

// ErrFormat is wrapped by every error about the bytes themselves.
var ErrFormat = errors.New("npy: not a supported .npy array")

// Encode writes a float32 array of the given shape (C order) as a version 1.0 .npy file.
func Encode(w io.Writer, shape []int, data []float32) error {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("npy: negative dimension in shape %v", shape)
		}
		n *= d
	}
	if n != len(data) {
		return fmt.Errorf("npy: shape %v holds %d values, got %d", shape, n, len(data))
	}
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	header := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", tuple)
	// The data starts at a multiple of 64 bytes; the header ends with '\n'.
	total := len(magic) + 2 + 2 + len(header) + 1
	pad := (64 - total%64) % 64
	header += strings.Repeat(" ", pad) + "\n"
	if len(header) > math.MaxUint16 {
		return fmt.Errorf("npy: header of %d bytes is too long for version 1.0", len(header))
	}
	bw := bufio.NewWriter(w)
	bw.Write(magic)
	bw.Write([]byte{1, 0})
	binary.Write(bw, binary.LittleEndian, uint16(len(header)))
	bw.WriteString(header)
	var b [4]byte
	for _, v := range data {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		bw.Write(b[:])
	}
	return bw.Flush()
}

var (
	descrRe   = regexp.MustCompile(`'descr'\s*:\s*'([^']*)'`)
	fortranRe = regexp.MustCompile(`'fortran_order'\s*:\s*(True|False)`)
	shapeRe   = regexp.MustCompile(`'shape'\s*:\s*\(([^)]*)\)`)
)

// Decode reads a .npy array of little-endian float32, float64 or uint8 values
// (uint8 are scaled to [0, 1]) in C order, returning its shape and values as
// float32. It never allocates more than MaxValues values and never panics.
func Decode(r io.Reader) ([]int, []float32, error) {
	br := bufio.NewReader(r)
	var pre [8]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return nil, nil, fmt.Errorf("%w: preamble: %v", ErrFormat, err)
	}
	if string(pre[:6]) != string(magic) {
		return nil, nil, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	var hlen int
	switch pre[6] {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, nil, fmt.Errorf("%w: header length: %v", ErrFormat, err)
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, nil, fmt.Errorf("%w: header length: %v", ErrFormat, err)
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return nil, nil, fmt.Errorf("%w: version %d.%d", ErrFormat, pre[6], pre[7])
	}
	if hlen > 1<<20 {
		return nil, nil, fmt.Errorf("%w: header of %d bytes", ErrFormat, hlen)
	}
	hb := make([]byte, hlen)
	if _, err := io.ReadFull(br, hb); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	h := string(hb)
	m := descrRe.FindStringSubmatch(h)
	if m == nil {
		return nil, nil, fmt.Errorf("%w: header has no descr", ErrFormat)
	}
	descr := m[1]
	var size int
	switch descr {
	case "<f4":
		size = 4
	case "<f8":
		size = 8
	case "|u1", "<u1", "u1":
		size = 1
	default:
		return nil, nil, fmt.Errorf("%w: dtype %q (want <f4, <f8 or |u1)", ErrFormat, descr)
	}
	if m := fortranRe.FindStringSubmatch(h); m == nil || m[1] != "False" {
		return nil, nil, fmt.Errorf("%w: only C-order arrays are read (fortran_order must be False)", ErrFormat)
	}
	m = shapeRe.FindStringSubmatch(h)
	if m == nil {
		return nil, nil, fmt.Errorf("%w: header has no shape", ErrFormat)
	}
	var shape []int
	n := 1
	for _, f := range strings.Split(m[1], ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 0 {
			return nil, nil, fmt.Errorf("%w: shape (%s)", ErrFormat, m[1])
		}
		if d > 0 && n > MaxValues/d {
			return nil, nil, fmt.Errorf("%w: shape (%s) holds more than %d values", ErrFormat, m[1], MaxValues)
		}
		n *= d
		shape = append(shape, d)
	}
	out := make([]float32, n)
	buf := make([]byte, 64<<10)
	for i := 0; i < n; {
		k := min(len(buf)/size, n-i)
		if _, err := io.ReadFull(br, buf[:k*size]); err != nil {
			return nil, nil, fmt.Errorf("%w: data: %d of %d values: %v", ErrFormat, i, n, err)
		}
		for j := 0; j < k; j++ {
			switch size {
			case 4:
				out[i+j] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*j:]))
			case 8:
				out[i+j] = float32(math.Float64frombits(binary.LittleEndian.Uint64(buf[8*j:])))
			case 1:
				out[i+j] = float32(buf[j]) / 255
			}
		}
		i += k
	}
	return shape, out, nil
}

// WriteFile writes the array to path atomically (temp file, then rename).
func WriteFile(path string, shape []int, data []float32) error {
	if err := atomicfile.Write(path, 0o666, func(w io.Writer) error { return Encode(w, shape, data) }); err != nil {
		return fmt.Errorf("npy: %w", err)
	}
	return nil
}

// ReadFile reads the array at path.
func ReadFile(path string) ([]int, []float32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("npy: %w", err)
	}
	defer f.Close()
	shape, data, err := Decode(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return shape, data, nil
}
