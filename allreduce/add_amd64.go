package allreduce

import (
	"encoding/binary"
	"math"
	"unsafe"

	"golang.org/x/sys/cpu"
)

//go:noescape
func sumAVX2(dst, x, y *byte, n int)

var hasAVX2 = cpu.X86.HasAVX2

// sumInto sets dst to x + y, value by value, where dst and y hold little-endian float32
// values at any alignment (y is usually a slice of a received frame). It is the reduction's
// inner loop; dst may be the bytes of x.
func sumInto(dst []byte, x []float32, y []byte) {
	n := len(x)
	dst, y = dst[:4*n], y[:4*n]
	if m := n &^ 31; hasAVX2 && m > 0 {
		sumAVX2(&dst[0], (*byte)(unsafe.Pointer(&x[0])), &y[0], m)
		dst, x, y = dst[4*m:], x[m:], y[4*m:]
	}
	for i, v := range x {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v+math.Float32frombits(binary.LittleEndian.Uint32(y[4*i:]))))
	}
}

// addBytes sets dst[i] += the i-th little-endian float32 of src.
func addBytes(dst []float32, src []byte) { sumInto(floatBytes(dst), dst, src) }
