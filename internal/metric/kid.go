package metric

import (
	"math"

	"github.com/ncsn/ncsn/internal/gemm"
	"github.com/ncsn/ncsn/internal/keyrand"
)

// kidTag separates the subset draws from other uses of a seed.
const kidTag = 0x6b6964 // "kid"

// KIDOptions sets the subsets KID averages over (Bińkowski et al. 2018 use
// 100 subsets of 1,000).
type KIDOptions struct {
	Subsets    int // default 100
	SubsetSize int // default 1000, capped at the smaller set's size
	Seed       uint64
}

// KID is the kernel inception distance between the feature sets x and y
// (n×d each, any n >= 2): the unbiased estimate of MMD² with the cubic
// polynomial kernel k(a, b) = (a·b/d + 1)³, averaged over random subsets of
// each set drawn without replacement. It returns the mean over subsets and
// their standard deviation. Dot products run through float32 GEMM; the kernel
// sums are accumulated in float64.
func KID(x, y []float32, d int, o KIDOptions) (mean, std float64, err error) {
	nx, err := checkSet("kid", x, d, 2)
	if err != nil {
		return 0, 0, err
	}
	ny, err := checkSet("kid", y, d, 2)
	if err != nil {
		return 0, 0, err
	}
	if o.Subsets <= 0 {
		o.Subsets = 100
	}
	if o.SubsetSize <= 0 {
		o.SubsetSize = 1000
	}
	m := min(o.SubsetSize, nx, ny)
	xs, ys := make([]float32, m*d), make([]float32, m*d)
	gram := make([]float32, m*m)
	px, py := make([]int, nx), make([]int, ny)
	var r keyrand.Stream
	vals := make([]float64, o.Subsets)
	for s := range vals {
		r.Reset(o.Seed, kidTag, uint64(s))
		r.Perm(px)
		r.Perm(py)
		for i := 0; i < m; i++ {
			copy(xs[i*d:(i+1)*d], x[px[i]*d:(px[i]+1)*d])
			copy(ys[i*d:(i+1)*d], y[py[i]*d:(py[i]+1)*d])
		}
		kxx := kernelSum(xs, xs, m, d, gram, true)
		kyy := kernelSum(ys, ys, m, d, gram, true)
		kxy := kernelSum(xs, ys, m, d, gram, false)
		mm := float64(m)
		vals[s] = (kxx+kyy)/(mm*(mm-1)) - 2*kxy/(mm*mm)
	}
	for _, v := range vals {
		mean += v
	}
	mean /= float64(len(vals))
	for _, v := range vals {
		std += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(std / float64(len(vals))), nil
}

// kernelSum is Σ k(a_i, b_j) over all pairs of the m vectors of a and b, or
// over the pairs i ≠ j when offDiag.
func kernelSum(a, b []float32, m, d int, gram []float32, offDiag bool) float64 {
	gemm.Sgemm(false, true, m, m, d, 1/float32(d), a, d, b, d, 0, gram, m)
	var s float64
	for i := 0; i < m; i++ {
		var row float64
		for j, g := range gram[i*m : (i+1)*m] {
			if offDiag && i == j {
				continue
			}
			v := float64(g) + 1
			row += v * v * v
		}
		s += row
	}
	return s
}
