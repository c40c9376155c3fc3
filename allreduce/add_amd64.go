package allreduce

import "golang.org/x/sys/cpu"

//go:noescape
func addAVX2(dst, src *float32, n int)

var hasAVX2 = cpu.X86.HasAVX2

// addFloats sets dst[i] += src[i]; the reduction's inner loop.
func addFloats(dst, src []float32) {
	src = src[:len(dst)]
	if m := len(dst) &^ 31; hasAVX2 && m > 0 {
		addAVX2(&dst[0], &src[0], m)
		dst, src = dst[m:], src[m:]
	}
	for i := range dst {
		dst[i] += src[i]
	}
}
