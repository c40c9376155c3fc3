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
