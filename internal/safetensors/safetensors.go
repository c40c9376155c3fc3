// Package safetensors reads and writes the huggingface safetensors format,
// which ncsn uses for checkpoints so that any safetensors reader (PyTorch
// users included) can open them.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON header
// mapping tensor names to {"dtype", "shape", "data_offsets"} (offsets relative
// to the data section) plus an optional string-to-string "__metadata__", then
// the data section: the tensors' little-endian, row-major bytes, contiguous.
//
// Encode records a SHA-256 of the data section in the metadata and Decode
// verifies it, so a checkpoint that was truncated or damaged on disk is
// refused (errors.Is(err, ErrCorrupt)) instead of being trained from.
package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"unicode/utf8"
)

// DType is an element type, spelled as in the safetensors header.
type DType string

// The element types this package understands. Only the ones with typed
// accessors (F32, F64, I64, I32, U8) can be converted to Go slices; the
// others are carried as raw bytes.
const (
	BOOL DType = "BOOL"
	U8   DType = "U8"
	I8   DType = "I8"
	I16  DType = "I16"
	U16  DType = "U16"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I32  DType = "I32"
	U32  DType = "U32"
	F32  DType = "F32"
	I64  DType = "I64"
	U64  DType = "U64"
	F64  DType = "F64"
)

// Size is the size of one element in bytes, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case BOOL, U8, I8:
		return 1
	case I16, U16, F16, BF16:
		return 2
	case I32, U32, F32:
		return 4
	case I64, U64, F64:
		return 8
	}
	return 0
}

// MaxRank bounds the number of dimensions of a tensor. The format has no
// limit, but without one a header of zero-length dimensions could make the
// decoder hold far more memory than the file's size suggests.
const MaxRank = 64

// metadataKey is the reserved header key holding File.Metadata.
const metadataKey = "__metadata__"

// Tensor is one named tensor. Data holds the elements little-endian in
// row-major order; its length is always the product of Shape times the
// dtype's size. A zero-length Shape is a scalar (one element).
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// File is the content of a safetensors file.
type File struct {
	// Tensors in file order for a decoded file; Encode chooses its own
	// deterministic order, so the order here does not affect the bytes.
	Tensors []Tensor
	// Metadata is the header's "__metadata__". Encode adds MetaChecksum and
	// MetaSHA256, overwriting any values the caller set for them.
	Metadata map[string]string
}

// Tensor returns the tensor called name.
func (f *File) Tensor(name string) (*Tensor, bool) {
	for i := range f.Tensors {
		if f.Tensors[i].Name == name {
			return &f.Tensors[i], true
		}
	}
	return nil, false
}

// Add appends t after checking that it is well formed and its name is new.
// The shape is copied; Data is not, so the caller must not modify it until
// the file has been encoded.
func (f *File) Add(t Tensor) error {
	if err := checkTensor(t); err != nil {
		return err
	}
	if _, dup := f.Tensor(t.Name); dup {
		return fmt.Errorf("safetensors: duplicate tensor %q", t.Name)
	}
	t.Shape = append([]int{}, t.Shape...)
	f.Tensors = append(f.Tensors, t)
	return nil
}

// AddF32 appends a float32 tensor; v holds the elements in row-major order.
func (f *File) AddF32(name string, shape []int, v []float32) error {
	return addTyped(f, name, F32, shape, v)
}

// AddF64 appends a float64 tensor.
func (f *File) AddF64(name string, shape []int, v []float64) error {
	return addTyped(f, name, F64, shape, v)
}

// AddI64 appends an int64 tensor.
func (f *File) AddI64(name string, shape []int, v []int64) error {
	return addTyped(f, name, I64, shape, v)
}

// AddI32 appends an int32 tensor.
func (f *File) AddI32(name string, shape []int, v []int32) error {
	return addTyped(f, name, I32, shape, v)
}

// AddU8 appends a uint8 tensor.
func (f *File) AddU8(name string, shape []int, v []uint8) error {
	return addTyped(f, name, U8, shape, v)
}

// F32 returns a copy of the elements and shape of the float32 tensor name.
func (f *File) F32(name string) ([]float32, []int, error) { return getTyped[float32](f, name, F32) }

// F64 returns a copy of the elements and shape of the float64 tensor name.
func (f *File) F64(name string) ([]float64, []int, error) { return getTyped[float64](f, name, F64) }

// I64 returns a copy of the elements and shape of the int64 tensor name.
func (f *File) I64(name string) ([]int64, []int, error) { return getTyped[int64](f, name, I64) }

// I32 returns a copy of the elements and shape of the int32 tensor name.
func (f *File) I32(name string) ([]int32, []int, error) { return getTyped[int32](f, name, I32) }

// U8 returns a copy of the elements and shape of the uint8 tensor name.
func (f *File) U8(name string) ([]uint8, []int, error) { return getTyped[uint8](f, name, U8) }

type element interface {
	float32 | float64 | int32 | int64 | uint8
}

func addTyped[T element](f *File, name string, d DType, shape []int, v []T) error {
	n, err := numElements(shape)
	if err != nil {
		return fmt.Errorf("safetensors: tensor %q: %w", name, err)
	}
	if n != uint64(len(v)) {
		return fmt.Errorf("safetensors: tensor %q: shape %v holds %d elements, got %d values", name, shape, n, len(v))
	}
	data := make([]byte, len(v)*d.Size())
	if _, err := binary.Encode(data, binary.LittleEndian, v); err != nil {
		return fmt.Errorf("safetensors: tensor %q: %w", name, err)
	}
	return f.Add(Tensor{Name: name, DType: d, Shape: shape, Data: data})
}

func getTyped[T element](f *File, name string, d DType) ([]T, []int, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, nil, fmt.Errorf("safetensors: no tensor %q", name)
	}
	if t.DType != d {
		return nil, nil, fmt.Errorf("safetensors: tensor %q is %s, not %s", name, t.DType, d)
	}
	if len(t.Data)%d.Size() != 0 {
		return nil, nil, fmt.Errorf("safetensors: tensor %q: %d bytes is not a whole number of %s elements", name, len(t.Data), d)
	}
	v := make([]T, len(t.Data)/d.Size())
	if _, err := binary.Decode(t.Data, binary.LittleEndian, v); err != nil {
		return nil, nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
	}
	return v, append([]int{}, t.Shape...), nil
}

// checkTensor reports why t cannot be written, if it cannot.
func checkTensor(t Tensor) error {
	if err := checkName(t.Name); err != nil {
		return err
	}
	size := t.DType.Size()
	if size == 0 {
		return fmt.Errorf("safetensors: tensor %q: unsupported dtype %q", t.Name, t.DType)
	}
	want, err := byteLength(t.Shape, size)
	if err != nil {
		return fmt.Errorf("safetensors: tensor %q: %w", t.Name, err)
	}
	if want != uint64(len(t.Data)) {
		return fmt.Errorf("safetensors: tensor %q: %s shape %v needs %d bytes, has %d", t.Name, t.DType, t.Shape, want, len(t.Data))
	}
	return nil
}

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("safetensors: tensor with an empty name")
	case name == metadataKey:
		return fmt.Errorf("safetensors: tensor name %q is reserved", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("safetensors: tensor name %q is not valid UTF-8", name)
	}
	return nil
}

// numElements is the product of shape, refusing negative dimensions, ranks
// above MaxRank and products that overflow.
func numElements(shape []int) (uint64, error) {
	if len(shape) > MaxRank {
		return 0, fmt.Errorf("rank %d exceeds the limit of %d", len(shape), MaxRank)
	}
	n := uint64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
		n = lo
	}
	return n, nil
}

// byteLength is the data size of a tensor, guaranteed to fit in an int.
func byteLength(shape []int, size int) (uint64, error) {
	n, err := numElements(shape)
	if err != nil {
		return 0, err
	}
	hi, lo := bits.Mul64(n, uint64(size))
	if hi != 0 || lo > math.MaxInt {
		return 0, fmt.Errorf("shape %v overflows", shape)
	}
	return lo, nil
}
