package metric

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// Gaussian is the mean and covariance of a set of feature vectors.
type Gaussian struct {
	Mean []float64
	// Cov is the unbiased sample covariance, d×d row-major.
	Cov []float64
	// N is the number of vectors it was fitted to.
	N int
}

// Fit returns the mean and covariance of the vectors of x (n×d, n >= 2),
// accumulated in float64.
func Fit(x []float32, d int) (Gaussian, error) {
	n, err := checkSet("fit", x, d, 2)
	if err != nil {
		return Gaussian{}, err
	}
	g := Gaussian{Mean: make([]float64, d), Cov: make([]float64, d*d), N: n}
	for i := 0; i < n; i++ {
		for j, v := range x[i*d : (i+1)*d] {
			g.Mean[j] += float64(v)
		}
	}
	for j := range g.Mean {
		g.Mean[j] /= float64(n)
	}
	// Centre first: Σ(x−μ)(x−μ)ᵀ does not cancel the way ΣxxᵀΣ − nμμᵀ does.
	c := make([]float64, n*d)
	for i := 0; i < n; i++ {
		for j, v := range x[i*d : (i+1)*d] {
			c[i*d+j] = float64(v) - g.Mean[j]
		}
	}
	cm := mat.NewDense(n, d, c)
	var cov mat.Dense
	cov.Mul(cm.T(), cm)
	for i := 0; i < d; i++ {
		for j := 0; j < d; j++ {
			g.Cov[i*d+j] = cov.At(i, j) / float64(n-1)
		}
	}
	return g, nil
}

// Frechet is the Fréchet distance between the Gaussians a and b,
// ‖μa−μb‖² + tr(Σa + Σb − 2(Σa^½ Σb Σa^½)^½): the FID when they are fitted to
// a classifier's features. The square roots come from symmetric
// eigendecompositions in float64, with eigenvalues that rounding left below
// zero taken as zero.
func Frechet(a, b Gaussian) (float64, error) {
	d := len(a.Mean)
	if d == 0 || len(b.Mean) != d || len(a.Cov) != d*d || len(b.Cov) != d*d {
		return 0, fmt.Errorf("metric: frechet: Gaussians of dimensions %d and %d", len(a.Mean), len(b.Mean))
	}
	var dist float64
	for j := range a.Mean {
		e := a.Mean[j] - b.Mean[j]
		dist += e * e
	}
	sa, sb := symmetric(a.Cov, d), symmetric(b.Cov, d)
	for i := 0; i < d; i++ {
		dist += sa.At(i, i) + sb.At(i, i)
	}
	root, err := sqrtSym(sa)
	if err != nil {
		return 0, err
	}
	var m, t mat.Dense
	t.Mul(root, sb)
	m.Mul(&t, root)
	vals, err := eigenvalues(symmetric(m.RawMatrix().Data, d))
	if err != nil {
		return 0, err
	}
	for _, v := range vals {
		dist -= 2 * math.Sqrt(max(v, 0))
	}
	// A distance: rounding must not make it negative.
	return max(dist, 0), nil
}

// symmetric is the symmetric part of the d×d matrix a, (a + aᵀ)/2.
func symmetric(a []float64, d int) *mat.SymDense {
	s := mat.NewSymDense(d, nil)
	for i := 0; i < d; i++ {
		for j := i; j < d; j++ {
			s.SetSym(i, j, (a[i*d+j]+a[j*d+i])/2)
		}
	}
	return s
}

func eigenvalues(s *mat.SymDense) ([]float64, error) {
	var e mat.EigenSym
	if !e.Factorize(s, false) {
		return nil, fmt.Errorf("metric: eigendecomposition did not converge")
	}
	return e.Values(nil), nil
}

// sqrtSym is the square root V·diag(√λ)·Vᵀ of a positive semi-definite s.
func sqrtSym(s *mat.SymDense) (*mat.Dense, error) {
	var e mat.EigenSym
	if !e.Factorize(s, true) {
		return nil, fmt.Errorf("metric: eigendecomposition did not converge")
	}
	vals := e.Values(nil)
	var v mat.Dense
	e.VectorsTo(&v)
	d := len(vals)
	scaled := mat.NewDense(d, d, nil)
	for i := 0; i < d; i++ {
		for j := 0; j < d; j++ {
			scaled.Set(i, j, v.At(i, j)*math.Sqrt(max(vals[j], 0)))
		}
	}
	var r mat.Dense
	r.Mul(scaled, v.T())
	return &r, nil
}
