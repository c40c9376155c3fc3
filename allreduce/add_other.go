//go:build !amd64

package allreduce

import (
	"encoding/binary"
	"math"
)

// sumInto sets dst to x + y, value by value, where dst and y hold little-endian float32
// values at any alignment. dst may not overlap x unless it is x's memory on a little-endian
// machine.
func sumInto(dst []byte, x []float32, y []byte) {
	dst, y = dst[:4*len(x)], y[:4*len(x)]
	for i, v := range x {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v+math.Float32frombits(binary.LittleEndian.Uint32(y[4*i:]))))
	}
}

// addBytes sets dst[i] += the i-th little-endian float32 of src.
func addBytes(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}
