// Package metric holds the mathematics of sample quality: Gaussian statistics
// of feature vectors and the Fréchet distance between them (FID), the kernel
// inception distance (KID), the energy distance between point sets, and
// nearest neighbours by L2. Callers supply the vectors; which network made the
// features is not this package's business.
package metric

import "fmt"

// checkSet reports whether x holds n vectors of d values, n >= min.
func checkSet(what string, x []float32, d, min int) (n int, err error) {
	if d < 1 {
		return 0, fmt.Errorf("metric: dimension %d, want >= 1", d)
	}
	if len(x)%d != 0 {
		return 0, fmt.Errorf("metric: %s: %d values are not vectors of %d", what, len(x), d)
	}
	if n = len(x) / d; n < min {
		return 0, fmt.Errorf("metric: %s: %d vectors, want at least %d", what, n, min)
	}
	return n, nil
}
