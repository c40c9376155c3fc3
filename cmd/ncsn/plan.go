package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ncsn/ncsn/model/config"
)

func init() {
	commands["plan"] = command{
		summary: "print the σ schedule and Langevin step size a run config resolves to (NCSNv2 techniques 1-3)",
		run:     runPlan,
	}
}

func runPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "run config YAML (default: the embedded default, synthetic images)")
	var sets setFlags
	fs.Var(&sets, "set", "override a config key, e.g. --set noise.levels=auto (repeatable)")
	asJSON := fs.Bool("json", false, "print the plan as one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: ncsn plan [--config FILE] [--set key=value]... [--json]

Resolves the keys set to auto as a run would, and prints the schedule with the
numbers that produced it (NCSNv2, Song & Ermon 2020):
  noise.sigma_max: auto   technique 1: the largest pairwise distance over a sample
                          of the training set (reads the data)
  noise.levels: auto      technique 2: γ with Φ(√(2D)(γ−1)+3γ) − Φ(√(2D)(γ−1)−3γ) = 0.5
  sample.eps: auto        technique 3: ε minimising |s_T²/σ_i² − 1| for T = sample.steps_per_level
Keys given as numbers are printed with the same figures.`)
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	rc, err := config.Load(*path, sets)
	if err != nil {
		return usageError{err}
	}
	rc, p, err := rc.Resolve()
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(struct {
			Noise        any              `json:"noise"`
			Sample       any              `json:"sample"`
			Auto         []string         `json:"auto"`
			Dim          int              `json:"dim"`
			Sigmas       []float64        `json:"sigmas"`
			Gamma        float64          `json:"gamma"`
			GammaRule    float64          `json:"gamma_rule"`
			RuleGamma    float64          `json:"rule_gamma"`
			Distance     *config.Distance `json:"distance,omitempty"`
			StepRatio    float64          `json:"step_ratio"`
			SamplerSteps int              `json:"sampler_steps"`
		}{
			map[string]any{"sigma_max": rc.Noise.SigmaMax, "sigma_min": rc.Noise.SigmaMin, "levels": rc.Noise.Levels},
			map[string]any{"steps_per_level": rc.Sample.StepsPerLevel, "eps": rc.Sample.Eps, "denoise": rc.Sample.Denoise},
			append([]string{}, p.Auto.Keys()...), p.Dim, p.Sigmas, p.Gamma, p.GammaRule, p.RuleGamma, p.Distance, p.StepRatio, p.SamplerSteps,
		})
	}
	how := func(auto bool, technique string) string {
		if auto {
			return "auto, " + technique
		}
		return "given"
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "data\t%s, D = %d values per example (shape %v)\n", rc.Data.Name, p.Dim, rc.Shape())
	fmt.Fprintf(w, "noise.sigma_max\t%.6g\t%s\n", rc.Noise.SigmaMax, how(p.Auto.SigmaMax, "technique 1"))
	if d := p.Distance; d != nil {
		fmt.Fprintf(w, "\t\tlargest pairwise distance %.6g, between training examples %d and %d,\n", d.Max, d.I, d.J)
		fmt.Fprintf(w, "\t\tover %d of the %d training examples, chosen by run.seed %d\n", d.Sample, d.Of, d.Seed)
	}
	fmt.Fprintf(w, "noise.sigma_min\t%.6g\tgiven\n", rc.Noise.SigmaMin)
	fmt.Fprintf(w, "noise.levels\t%d\t%s\n", rc.Noise.Levels, how(p.Auto.Levels, "technique 2"))
	if p.RuleGamma > 0 {
		fmt.Fprintf(w, "\t\tγ = %.5g solves Φ(√(2D)(γ−1)+3γ) − Φ(√(2D)(γ−1)−3γ) = 0.5 for D = %d\n", p.RuleGamma, p.Dim)
	} else {
		fmt.Fprintf(w, "\t\tthe γ rule has no solution for D = %d (it needs D >= 5)\n", p.Dim)
	}
	fmt.Fprintf(w, "gamma\t%.5g\tthe schedule's σ_{i−1}/σ_i; the rule there is %.4f (NCSNv2 aims for 0.5)\n", p.Gamma, p.GammaRule)
	fmt.Fprintf(w, "sample.steps_per_level\t%d\tgiven (T)\n", rc.Sample.StepsPerLevel)
	fmt.Fprintf(w, "sample.eps\t%.3g\t%s\n", rc.Sample.Eps, how(p.Auto.Eps, "technique 3"))
	fmt.Fprintf(w, "\t\ts_T²/σ_i² = %.4f at this ε (technique 3 brings it closest to 1)\n", p.StepRatio)
	denoise := ""
	if rc.Sample.Denoise {
		denoise = " + 1 denoising step"
	}
	fmt.Fprintf(w, "sampler\t%d\tnetwork evaluations per batch of samples: %d levels × %d steps%s\n", p.SamplerSteps, rc.Noise.Levels, rc.Sample.StepsPerLevel, denoise)
	if err := w.Flush(); err != nil {
		return err
	}
	sig := make([]string, len(p.Sigmas))
	for i, s := range p.Sigmas {
		sig[i] = fmt.Sprintf("%.4g", s)
	}
	_, err = fmt.Fprintf(stdout, "sigmas: %s\n", strings.Join(sig, " "))
	return err
}
