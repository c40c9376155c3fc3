//go:build !amd64

package allreduce

// addFloats sets dst[i] += src[i]; the reduction's inner loop.
func addFloats(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}
