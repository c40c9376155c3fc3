package metric

import "math"

// Energy is the energy distance between the point sets x and y (n×d each):
// 2·E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖, zero exactly when the distributions are
// equal. The within-set means run over distinct pairs (U-statistics), so two
// samples of one distribution score 0 in expectation. within is
// WithinDistance(y, d) when the caller has it (y is often a fixed reference
// scored against many sets), or negative to compute it here.
func Energy(x, y []float32, d int, within float64) (float64, error) {
	if _, err := checkSet("energy", x, d, 2); err != nil {
		return 0, err
	}
	if _, err := checkSet("energy", y, d, 2); err != nil {
		return 0, err
	}
	if within < 0 {
		within = WithinDistance(y, d)
	}
	return 2*CrossDistance(x, y, d) - WithinDistance(x, d) - within, nil
}

// CrossDistance is the mean L2 distance between the vectors of x and those of y.
func CrossDistance(x, y []float32, d int) float64 {
	nx, ny := len(x)/d, len(y)/d
	var s float64
	for i := 0; i < nx; i++ {
		s += rowDistances(x[i*d:(i+1)*d], y, d)
	}
	return s / float64(nx*ny)
}

// WithinDistance is the mean L2 distance over the distinct pairs of vectors of x.
func WithinDistance(x []float32, d int) float64 {
	n := len(x) / d
	var s float64
	for i := 1; i < n; i++ {
		s += rowDistances(x[i*d:(i+1)*d], x[:i*d], d)
	}
	return 2 * s / float64(n*(n-1))
}

// rowDistances is Σ_j ‖a − y_j‖ in float64.
func rowDistances(a, y []float32, d int) float64 {
	var s float64
	for j := 0; j+d <= len(y); j += d {
		var q float64
		for k, v := range a {
			e := float64(v) - float64(y[j+k])
			q += e * e
		}
		s += math.Sqrt(q)
	}
	return s
}
