package data

import (
	"fmt"
	"math"
	"slices"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// GMM is a mixture of isotropic Gaussians Σ_k w_k·N(μ_k, std²·I). Besides
// generating training points it gives the exact score of the mixture after
// Gaussian noise of any σ, which is what toy-data evaluation compares a
// model against. Its methods do not modify it and are safe for concurrent use.
type GMM struct {
	means   [][]float64
	weights []float64
	logw    []float64
	cum     []float64 // cumulative weights, for drawing a component
	std     float64
}

// NewGMM checks and copies its arguments. The messages use the config keys
// (data.means, data.weights, data.std), which is where the values come from.
func NewGMM(means [][]float64, weights []float64, std float64) (*GMM, error) {
	if err := validateGMM(means, weights); err != nil {
		return nil, err
	}
	if !(std > 0) || math.IsInf(std, 0) {
		return nil, fmt.Errorf("data.std: %v, want a finite positive number", std)
	}
	g := &GMM{std: std}
	var sum float64
	for k, m := range means {
		g.means = append(g.means, slices.Clone(m))
		g.weights = append(g.weights, weights[k])
		g.logw = append(g.logw, math.Log(weights[k]))
		sum += weights[k]
		g.cum = append(g.cum, sum)
	}
	// Rounding must not leave a draw of u close to 1 without a component.
	g.cum[len(g.cum)-1] = math.Inf(1)
	return g, nil
}

// GMM returns the mixture a gmm config describes, defaults filled.
func (c Config) GMM() (*GMM, error) {
	c = c.WithDefaults()
	if c.Name != NameGMM {
		return nil, fmt.Errorf("data.name: %q is not gmm, so it has no analytic mixture", c.Name)
	}
	return NewGMM(c.Means, c.Weights, c.Std)
}

// Dim is the dimension of the points.
func (g *GMM) Dim() int { return len(g.means[0]) }

// Components is the number of mixture components (modes).
func (g *GMM) Components() int { return len(g.means) }

// Mean returns a copy of μ_k.
func (g *GMM) Mean(k int) []float64 { return slices.Clone(g.means[k]) }

// Weight returns w_k.
func (g *GMM) Weight(k int) float64 { return g.weights[k] }

// Std is the standard deviation of every component before noise.
func (g *GMM) Std() float64 { return g.std }

// logComponent is log w_k + log N(x; μ_k, v·I).
func (g *GMM) logComponent(k int, x []float64, v float64) float64 {
	var d2 float64
	for j, m := range g.means[k] {
		d := x[j] - m
		d2 += d * d
	}
	return g.logw[k] - d2/(2*v) - float64(len(x))/2*math.Log(2*math.Pi*v)
}

// maxLog is max_k logComponent, the shift that keeps log-sum-exp finite.
func (g *GMM) maxLog(x []float64, v float64) float64 {
	m := math.Inf(-1)
	for k := range g.means {
		m = max(m, g.logComponent(k, x, v))
	}
	return m
}

// LogDensity is log p_σ(x), the log density of the mixture convolved with
// N(0, σ²·I): components N(μ_k, (std²+σ²)·I). len(x) must be Dim.
func (g *GMM) LogDensity(x []float64, sigma float64) float64 {
	v := g.std*g.std + sigma*sigma
	m := g.maxLog(x, v)
	var s float64
	for k := range g.means {
		s += math.Exp(g.logComponent(k, x, v) - m)
	}
	return m + math.Log(s)
}

// Score writes ∇ₓ log p_σ(x) into out (len Dim):
// Σ_k r_k(x)·(μ_k − x)/(std²+σ²) with r_k the posterior of component k.
// It does not allocate.
func (g *GMM) Score(x []float64, sigma float64, out []float64) {
	v := g.std*g.std + sigma*sigma
	m := g.maxLog(x, v)
	clear(out)
	var z float64
	for k, mu := range g.means {
		r := math.Exp(g.logComponent(k, x, v) - m)
		z += r
		for j := range out {
			out[j] += r * (mu[j] - x[j])
		}
	}
	for j := range out {
		out[j] /= z * v
	}
}

// Nearest is the component whose mean is closest to x, the mode a sample is
// counted towards when measuring how a sampler splits its mass.
func (g *GMM) Nearest(x []float64) int {
	best, bestD := 0, math.Inf(1)
	for k, mu := range g.means {
		var d2 float64
		for j, m := range mu {
			d := x[j] - m
			d2 += d * d
		}
		if d2 < bestD {
			best, bestD = k, d2
		}
	}
	return best
}

// draw writes one point of the mixture into dst.
func (g *GMM) draw(r *keyrand.Stream, dst []float32) {
	u := r.Float64()
	k := 0
	for u >= g.cum[k] {
		k++
	}
	for j, m := range g.means[k] {
		dst[j] = float32(m + g.std*r.Norm())
	}
}

// Points is a generated set of n points; example i is drawn from a stream
// keyed by (seed, split, i), so any worker computes it alone.
type Points struct {
	name  string
	dim   int
	n     int
	seed  uint64
	split Split
	gen   func(r *keyrand.Stream, dst []float32)
	gmm   *GMM
}

// Sample is a Points set of n draws from g.
func (g *GMM) Sample(seed uint64, split Split, n int) *Points {
	return &Points{name: NameGMM, dim: g.Dim(), n: n, seed: seed, split: split, gen: g.draw, gmm: g}
}

func (p *Points) Len() int     { return p.n }
func (p *Points) Shape() []int { return []int{p.dim} }

// Name is the data.name the set was made from.
func (p *Points) Name() string { return p.name }

// Mixture is the analytic mixture behind a gmm set, nil for other toys.
func (p *Points) Mixture() *GMM { return p.gmm }

func (p *Points) Example(i int, dst []float32) {
	if i < 0 || i >= p.n {
		panic(fmt.Sprintf("data: %s example %d out of range [0, %d)", p.name, i, p.n))
	}
	var r keyrand.Stream
	r.Reset(p.seed, tagExample, uint64(p.split), uint64(i))
	p.gen(&r, dst[:p.dim])
}

// Toy geometry, chosen so every toy spans roughly [-5, 5]² like the paper's
// mixture and the same noise schedule suits all of them.
const (
	ringInner   = 2.0
	ringOuter   = 4.0
	moonsScale  = 2.5
	checkerHalf = 4.0 // the board covers [-4, 4]², 4×4 cells of side 2
)

func newToy(name string, std float64, seed uint64, split Split, n int) *Points {
	p := &Points{name: name, dim: 2, n: n, seed: seed, split: split}
	switch name {
	case NameRings:
		p.gen = func(r *keyrand.Stream, dst []float32) {
			// Two concentric circles; each ring gets points in proportion
			// to its circumference so the density along both is equal.
			rad := ringInner
			if r.Float64()*(ringInner+ringOuter) >= ringInner {
				rad = ringOuter
			}
			sin, cos := math.Sincos(2 * math.Pi * r.Float64())
			dst[0] = float32(rad*cos + std*r.Norm())
			dst[1] = float32(rad*sin + std*r.Norm())
		}
	case NameMoons:
		p.gen = func(r *keyrand.Stream, dst []float32) {
			// scikit-learn's two interleaved half circles, centred and scaled.
			sin, cos := math.Sincos(math.Pi * r.Float64())
			x, y := cos, sin
			if r.IntN(2) == 1 {
				x, y = 1-cos, 0.5-sin
			}
			dst[0] = float32(moonsScale*(x-0.5) + std*r.Norm())
			dst[1] = float32(moonsScale*(y-0.25) + std*r.Norm())
		}
	case NameCheckerboard:
		p.gen = func(r *keyrand.Stream, dst []float32) {
			// Uniform on the 8 cells (col+row even) of a 4×4 board.
			col := r.IntN(4)
			row := 2*r.IntN(2) + col%2
			dst[0] = float32(-checkerHalf + 2*(float64(col)+r.Float64()))
			dst[1] = float32(-checkerHalf + 2*(float64(row)+r.Float64()))
		}
	default:
		panic("data: newToy of " + name)
	}
	return p
}
