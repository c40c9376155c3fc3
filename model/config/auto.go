package config

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
)

// autoValue is what a key set to auto holds in YAML and --set.
const autoValue = "auto"

// Auto says which keys are set to auto: NCSNv2's techniques fill them in
// (Resolve) from the training data and the other keys.
type Auto struct {
	// SigmaMax is noise.sigma_max: technique 1, the largest pairwise distance
	// over a sample of the training set.
	SigmaMax bool
	// Levels is noise.levels: technique 2, the γ rule for the data's dimension.
	Levels bool
	// Eps is sample.eps: technique 3, from sample.steps_per_level and γ.
	Eps bool
}

// autoKeys are the keys that may be set to auto, by their path.
var autoKeys = []string{"noise.sigma_max", "noise.levels", "sample.eps"}

func (a *Auto) flag(key string) *bool {
	switch key {
	case "noise.sigma_max":
		return &a.SigmaMax
	case "noise.levels":
		return &a.Levels
	case "sample.eps":
		return &a.Eps
	}
	return nil
}

// Keys are the paths of the keys set to auto.
func (a Auto) Keys() []string {
	var keys []string
	for _, k := range autoKeys {
		if *a.flag(k) {
			keys = append(keys, k)
		}
	}
	return keys
}

func autoKey(path string) bool { return (&Auto{}).flag(path) != nil }

func isAuto(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!str" && n.Value == autoValue
}

// take records the auto keys the document sets, to auto or to a number (which
// overrides a default of auto), and removes those set to auto from it so that
// the rest decodes into numbers.
func (a *Auto) take(doc *yaml.Node) {
	for _, k := range autoKeys {
		section, key, _ := strings.Cut(k, ".")
		m := lookup(doc, section)
		if m == nil || m.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value != key {
				continue
			}
			*a.flag(k) = isAuto(m.Content[i+1])
			if *a.flag(k) {
				m.Content = append(m.Content[:i], m.Content[i+2:]...)
				i -= 2
			}
		}
	}
}

// DistanceSample is how many training examples technique 1 measures: the
// largest pairwise distance among this many, chosen by the run seed, stands
// for the whole set's (a Gram matrix of 5,000 MNIST images takes about a second).
const DistanceSample = 5000

// Plan is how a run's σ schedule and Langevin step size came about: what
// NCSNv2's techniques gave for the keys set to auto, and the same figures
// for keys given as numbers.
type Plan struct {
	// Auto lists the keys that were set to auto.
	Auto Auto
	// Dim is D, the number of values per example.
	Dim    int
	Sigmas []float64
	// Gamma is the schedule's ratio σ_{i−1}/σ_i; GammaRule is technique 2's
	// rule at it (NCSNv2 chooses γ to make it 0.5).
	Gamma, GammaRule float64
	// RuleGamma is the γ at which the rule is 0.5 (0: none below 5 dimensions).
	RuleGamma float64
	// Distance is technique 1's measurement; nil unless noise.sigma_max was auto.
	Distance *Distance
	// StepRatio is s_T²/σ_i² at the run's ε (technique 3 brings it closest to 1).
	StepRatio float64
	// SamplerSteps is the number of network evaluations per batch of samples:
	// L·T Langevin steps, and the final denoising step.
	SamplerSteps int
}

// Distance is the measurement behind noise.sigma_max: auto.
type Distance struct {
	// Max is the largest distance between two examples of the sample, in the
	// model's space (doubled by centring).
	Max float64 `json:"max"`
	// Sample examples were measured, of the Of in the training set, chosen by Seed.
	Sample int    `json:"sample"`
	Of     int    `json:"of"`
	Seed   uint64 `json:"seed"`
	// I and J are the dataset indices of the farthest pair.
	I int `json:"i"`
	J int `json:"j"`
}

// Resolve returns c with the keys set to auto replaced by the numbers of
// NCSNv2's techniques 1–3, validated, and the plan that explains them.
// Only noise.sigma_max: auto reads the training data. The result is
// deterministic for a given config and data, so a resumed run resolves to
// the numbers its checkpoints hold. A config without auto comes back as is.
func (c Config) Resolve() (Config, Plan, error) {
	if err := c.check(); err != nil {
		return c, Plan{}, fmt.Errorf("config: %w", err)
	}
	p := Plan{Auto: c.Auto, Dim: 1}
	for _, d := range c.Shape() {
		p.Dim *= d
	}
	if c.Auto.SigmaMax {
		d, err := measureDistance(c)
		if err != nil {
			return c, Plan{}, err
		}
		p.Distance = d
		// Four digits: the sample's maximum is no more precise, and the config stays readable.
		c.Noise.SigmaMax = round(d.Max, 4)
		if c.Noise.SigmaMax <= c.Noise.SigmaMin {
			return c, Plan{}, fmt.Errorf("config: noise.sigma_max: auto gave %v, not above noise.sigma_min %v; set noise.sigma_max to a number", c.Noise.SigmaMax, c.Noise.SigmaMin)
		}
	}
	rg, rerr := model.RuleGamma(p.Dim)
	if rerr == nil {
		p.RuleGamma = rg
	}
	if c.Auto.Levels {
		if rerr != nil {
			return c, Plan{}, fmt.Errorf("config: noise.levels: auto: %w; set noise.levels to a number", rerr)
		}
		c.Noise.Levels = model.LevelsFor(c.Noise.SigmaMax, c.Noise.SigmaMin, rg)
	}
	if c.Noise.Levels >= 2 {
		p.Gamma = c.Noise.Ratio()
		p.GammaRule = model.GammaRule(p.Dim, p.Gamma)
	}
	if c.Auto.Eps {
		if c.Noise.Levels < 2 {
			return c, Plan{}, fmt.Errorf("config: sample.eps: auto needs noise.levels >= 2, not %d", c.Noise.Levels)
		}
		eps, _, err := model.TunedEps(c.Noise.SigmaMin, p.Gamma, c.Sample.StepsPerLevel)
		if err != nil {
			return c, Plan{}, fmt.Errorf("config: sample.eps: auto: %w", err)
		}
		// The minimum is flat: three digits lose nothing and read well.
		c.Sample.Eps = round(eps, 3)
	}
	c.Auto = Auto{}
	if err := c.Validate(); err != nil {
		return c, Plan{}, fmt.Errorf("config: after resolving auto: %w", err)
	}
	p.Sigmas = c.Noise.Sigmas()
	p.StepRatio = model.StepRatio(c.Sample.Eps, c.Noise.SigmaMin, p.Gamma, c.Sample.StepsPerLevel)
	p.SamplerSteps = c.Noise.Levels * c.Sample.StepsPerLevel
	if c.Sample.Denoise {
		p.SamplerSteps++
	}
	return c, p, nil
}

// measureDistance is technique 1: the largest pairwise Euclidean distance over
// DistanceSample training examples chosen by the run seed.
func measureDistance(c Config) (*Distance, error) {
	train, _, err := data.Open(c.Data, c.Run.Seed)
	if err != nil {
		return nil, fmt.Errorf("config: noise.sigma_max: auto measures the training data: %w", err)
	}
	x, idx, err := data.Subsample(train, DistanceSample, c.Run.Seed)
	if err != nil {
		return nil, fmt.Errorf("config: noise.sigma_max: auto: %w", err)
	}
	d, i, j, err := model.MaxPairwiseDistance(x, len(idx), data.Size(train))
	if err != nil {
		return nil, fmt.Errorf("config: noise.sigma_max: auto: %w", err)
	}
	if c.Data.Centered {
		// Centring maps x to 2x − 1: every distance doubles.
		d *= 2
	}
	return &Distance{Max: d, Sample: len(idx), Of: train.Len(), Seed: c.Run.Seed, I: idx[i], J: idx[j]}, nil
}

// round keeps digits significant digits of v.
func round(v float64, digits int) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', digits, 64), 64)
	return r
}
