package model

import (
	"fmt"
	"math"
)

// NoiseConfig is the run's σ schedule (YAML section "noise").
type NoiseConfig struct {
	SigmaMax float64 `yaml:"sigma_max"`
	SigmaMin float64 `yaml:"sigma_min"`
	Levels   int     `yaml:"levels"`
}

// Validate reports the first invalid key, by its path in the run config.
func (c NoiseConfig) Validate() error {
	switch {
	case !(c.SigmaMax > 0) || math.IsInf(c.SigmaMax, 0):
		return fmt.Errorf("noise.sigma_max: %v, want a finite value > 0", c.SigmaMax)
	case !(c.SigmaMin > 0):
		return fmt.Errorf("noise.sigma_min: %v, want > 0", c.SigmaMin)
	case c.SigmaMin >= c.SigmaMax:
		return fmt.Errorf("noise.sigma_min: %v must be below noise.sigma_max %v", c.SigmaMin, c.SigmaMax)
	case c.Levels < 2 || c.Levels > 10000:
		return fmt.Errorf("noise.levels: %d, want 2..10000", c.Levels)
	}
	return nil
}

// Sigmas is the geometric schedule σ_1 = SigmaMax > … > σ_L = SigmaMin.
func (c NoiseConfig) Sigmas() []float64 {
	s := make([]float64, c.Levels)
	lmax, lmin := math.Log(c.SigmaMax), math.Log(c.SigmaMin)
	for i := range s {
		s[i] = math.Exp(lmax + (lmin-lmax)*float64(i)/float64(c.Levels-1))
	}
	// Pin the ends: exp(log(x)) need not round-trip.
	s[0], s[len(s)-1] = c.SigmaMax, c.SigmaMin
	return s
}

// Ratio is the schedule's common ratio γ = σ_{i−1}/σ_i = (σ_1/σ_L)^{1/(L−1)}.
func (c NoiseConfig) Ratio() float64 {
	return math.Pow(c.SigmaMax/c.SigmaMin, 1/float64(c.Levels-1))
}

// normalCDF is Φ, the standard normal distribution function.
func normalCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }

// GammaRule is the criterion of NCSNv2's technique 2 (§3.2) for data of dim
// values and ratio γ between adjacent levels:
// Φ(√(2D)(γ−1)+3γ) − Φ(√(2D)(γ−1)−3γ), about the chance that a sample
// perturbed at σ_i lands where the level σ_{i+1} was trained. NCSNv2 sets it to 0.5.
func GammaRule(dim int, gamma float64) float64 {
	a := math.Sqrt(2*float64(dim)) * (gamma - 1)
	return normalCDF(a+3*gamma) - normalCDF(a-3*gamma)
}

// gammaTarget is the value of GammaRule NCSNv2 chooses γ for.
const gammaTarget = 0.5

// RuleGamma is the γ > 1 at which GammaRule(dim, γ) = 0.5, by bisection.
// Below 5 dimensions √(2D) ≤ 3 and the rule stays above 0.5 for every γ:
// there is no such γ and it returns an error.
func RuleGamma(dim int) (float64, error) {
	if 2*dim <= 9 {
		return 0, fmt.Errorf("model: technique 2 needs data of at least 5 values per example, not %d: the rule Φ(√(2D)(γ−1)+3γ) − Φ(√(2D)(γ−1)−3γ) = 0.5 has no solution", dim)
	}
	lo, hi := 1.0, 2.0
	for GammaRule(dim, hi) > gammaTarget {
		lo, hi = hi, 2*hi
	}
	for range 200 {
		m := (lo + hi) / 2
		if m == lo || m == hi {
			break
		}
		if GammaRule(dim, m) > gammaTarget {
			lo = m
		} else {
			hi = m
		}
	}
	return lo, nil
}

// LevelsFor is the number of levels L of the shortest geometric schedule
// from sigmaMax down to sigmaMin whose ratio is at most gamma (> 1).
func LevelsFor(sigmaMax, sigmaMin, gamma float64) int {
	// The small slack keeps an exact ratio (a schedule built from γ) from
	// gaining a level to rounding.
	return 1 + int(math.Ceil(math.Log(sigmaMax/sigmaMin)/math.Log(gamma)-1e-9))
}

// StepRatio is s_T²/σ_i² of NCSNv2's technique 3 (§3.3): the variance after
// T Langevin steps of size α_i = ε·σ_i²/σ_L² at level i, started from the
// previous level's σ_{i−1} = γ·σ_i, relative to the σ_i² it should reach:
// (1 − ε/σ_L²)^{2T} (γ² − 2ε/(σ_L² − σ_L²(1 − ε/σ_L²)²)) + 2ε/(σ_L² − σ_L²(1 − ε/σ_L²)²).
func StepRatio(eps, sigmaMin, gamma float64, steps int) float64 {
	s2 := sigmaMin * sigmaMin
	a := 1 - eps/s2
	c := 2 * eps / (s2 - s2*a*a)
	return math.Pow(a, 2*float64(steps))*(gamma*gamma-c) + c
}

// TunedEps is NCSNv2's technique 3: the step size ε in (0, σ_L²) that brings
// StepRatio closest to 1 for T = steps, and the ratio there. The ratio stays
// above 1 (it tends to γ² as ε → 0 and to 2 as ε → σ_L²), so this is its
// minimum: a log-spaced scan, then golden-section search around the best point.
func TunedEps(sigmaMin, gamma float64, steps int) (eps, ratio float64, err error) {
	if !(sigmaMin > 0) || !(gamma > 1) || steps < 1 || math.IsInf(sigmaMin, 0) || math.IsInf(gamma, 0) {
		return 0, 0, fmt.Errorf("model: technique 3: σ_L %v, γ %v, T %d: want σ_L > 0, γ > 1, T >= 1", sigmaMin, gamma, steps)
	}
	s2 := sigmaMin * sigmaMin
	// ε = s2·10^u for u in [lo, 0): the ratio is flat in ε far below σ_L².
	const lo, n = -12.0, 1200
	f := func(u float64) float64 { return math.Abs(StepRatio(s2*math.Pow(10, u), sigmaMin, gamma, steps) - 1) }
	best := 0
	for i := 1; i < n; i++ {
		if f(lo-lo*float64(i)/n) < f(lo-lo*float64(best)/n) {
			best = i
		}
	}
	a, b := lo-lo*float64(max(best-1, 0))/n, lo-lo*float64(min(best+1, n-1))/n
	phi := (math.Sqrt(5) - 1) / 2
	for range 100 {
		c, d := b-phi*(b-a), a+phi*(b-a)
		if f(c) < f(d) {
			b = d
		} else {
			a = c
		}
	}
	eps = s2 * math.Pow(10, (a+b)/2)
	return eps, StepRatio(eps, sigmaMin, gamma, steps), nil
}

// pairBlock is how many rows' Gram products are held at once (pairBlock·n floats).
const pairBlock = 256

// MaxPairwiseDistance is the largest Euclidean distance between two of the
// n examples of dim values in x (row-major), and the rows i < j that attain
// it (the first such pair). NCSNv2's technique 1 sets σ_1 to it. The search
// runs on float32 Gram products (‖a‖² + ‖b‖² − 2a·b, by gemm); the distance
// of the pair it finds is then recomputed in float64, so the value does not
// depend on the multiply's rounding.
func MaxPairwiseDistance(x []float32, n, dim int) (dist float64, i, j int, err error) {
	if n < 2 || dim < 1 || len(x) != n*dim {
		return 0, 0, 0, fmt.Errorf("model: pairwise distance of %d values as %d examples of %d: want at least 2 examples", len(x), n, dim)
	}
	norms := make([]float64, n)
	for r := range norms {
		var s float64
		for _, v := range x[r*dim : (r+1)*dim] {
			s += float64(v) * float64(v)
		}
		norms[r] = s
	}
	gram := make([]float32, min(pairBlock, n)*n)
	best, bi, bj := -1.0, 0, 1
	for r0 := 0; r0 < n; r0 += pairBlock {
		m := min(pairBlock, n-r0)
		gemmT(false, true, m, n, dim, 1, x[r0*dim:(r0+m)*dim], dim, x, dim, 0, gram[:m*n], n)
		for a := 0; a < m; a++ {
			row, na := gram[a*n:(a+1)*n], norms[r0+a]
			for b := r0 + a + 1; b < n; b++ {
				if d2 := na + norms[b] - 2*float64(row[b]); d2 > best {
					best, bi, bj = d2, r0+a, b
				}
			}
		}
	}
	var s float64
	for k := 0; k < dim; k++ {
		d := float64(x[bi*dim+k]) - float64(x[bj*dim+k])
		s += d * d
	}
	return math.Sqrt(s), bi, bj, nil
}
