package cluster

import (
	"encoding/binary"
	"fmt"
	"math"
)

// AppendFloats appends src as little-endian float32 to dst.
func AppendFloats(dst []byte, src []float32) []byte {
	for _, v := range src {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

// ReadFloats fills dst from little-endian float32 bytes; src must hold exactly len(dst) values.
func ReadFloats(dst []float32, src []byte) error {
	if len(src) != 4*len(dst) {
		return fmt.Errorf("cluster: %d bytes for %d float32 values", len(src), len(dst))
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
	return nil
}
