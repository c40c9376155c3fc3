package metric

import (
	"fmt"
	"math"

	"github.com/ncsn/ncsn/internal/gemm"
)

// nnBlock is how many queries share one GEMM against a chunk of references.
const nnBlock = 256

// Nearest keeps, for every query vector, the k nearest reference vectors by
// L2 among those added so far. References arrive in chunks, so a training set
// need never be in memory as float32 all at once.
type Nearest struct {
	q     []float32
	qn    []float64 // ‖q_i‖²
	n, d  int
	k     int
	idx   []int     // n×k, nearest first; -1 where fewer than k seen
	dist  []float64 // n×k squared distances, +Inf where empty
	score []float32 // scratch: one block of queries against one chunk
	rn    []float64
}

// NewNearest prepares a search for the k nearest neighbours of the vectors
// of queries (n×d).
func NewNearest(queries []float32, d, k int) (*Nearest, error) {
	n, err := checkSet("nearest", queries, d, 1)
	if err != nil {
		return nil, err
	}
	if k < 1 {
		return nil, fmt.Errorf("metric: nearest: k = %d, want >= 1", k)
	}
	s := &Nearest{q: queries, qn: make([]float64, n), n: n, d: d, k: k, idx: make([]int, n*k), dist: make([]float64, n*k)}
	for i := 0; i < n; i++ {
		s.qn[i] = sqNorm(queries[i*d : (i+1)*d])
	}
	for i := range s.idx {
		s.idx[i], s.dist[i] = -1, math.Inf(1)
	}
	return s, nil
}

func sqNorm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return s
}

// Add considers the vectors of refs (m×d), which are references
// offset … offset+m−1.
func (s *Nearest) Add(refs []float32, offset int) error {
	m, err := checkSet("nearest", refs, s.d, 1)
	if err != nil {
		return err
	}
	d := s.d
	if cap(s.rn) < m {
		s.rn = make([]float64, m)
	}
	rn := s.rn[:m]
	for j := range rn {
		rn[j] = sqNorm(refs[j*d : (j+1)*d])
	}
	if need := nnBlock * m; cap(s.score) < need {
		s.score = make([]float32, need)
	}
	for lo := 0; lo < s.n; lo += nnBlock {
		b := min(nnBlock, s.n-lo)
		dot := s.score[:b*m]
		gemm.Sgemm(false, true, b, m, d, 1, s.q[lo*d:(lo+b)*d], d, refs, d, 0, dot, m)
		for i := lo; i < lo+b; i++ {
			worst := s.dist[i*s.k+s.k-1]
			row := dot[(i-lo)*m : (i-lo+1)*m]
			for j, g := range row {
				// ‖q‖² + ‖r‖² − 2q·r screens in float32 precision; a candidate's
				// distance is then computed exactly. The slack covers float32's
				// rounding of q·r.
				approx := s.qn[i] + rn[j] - 2*float64(g)
				if approx > worst+1e-5*(s.qn[i]+rn[j])+1e-9 {
					continue
				}
				var e float64
				q, r := s.q[i*d:(i+1)*d], refs[j*d:(j+1)*d]
				for t, v := range q {
					x := float64(v) - float64(r[t])
					e += x * x
				}
				if e < worst {
					s.insert(i, offset+j, e)
					worst = s.dist[i*s.k+s.k-1]
				}
			}
		}
	}
	return nil
}

// insert puts reference j at squared distance e into query i's sorted list.
func (s *Nearest) insert(i, j int, e float64) {
	idx, dist := s.idx[i*s.k:(i+1)*s.k], s.dist[i*s.k:(i+1)*s.k]
	p := s.k - 1
	for p > 0 && dist[p-1] > e {
		idx[p], dist[p] = idx[p-1], dist[p-1]
		p--
	}
	idx[p], dist[p] = j, e
}

// Neighbours returns query i's nearest references, nearest first, and their
// L2 distances (fewer than k if fewer were added).
func (s *Nearest) Neighbours(i int) (idx []int, dist []float64) {
	for t := 0; t < s.k; t++ {
		j := s.idx[i*s.k+t]
		if j < 0 {
			break
		}
		idx = append(idx, j)
		dist = append(dist, math.Sqrt(s.dist[i*s.k+t]))
	}
	return idx, dist
}

// MeanDistance is the mean over queries of the distance to the nearest
// reference (+Inf before any reference is added).
func (s *Nearest) MeanDistance() float64 {
	var t float64
	for i := 0; i < s.n; i++ {
		t += math.Sqrt(s.dist[i*s.k])
	}
	return t / float64(s.n)
}
