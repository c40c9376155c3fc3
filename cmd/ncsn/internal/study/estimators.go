// Package study runs the toy experiments that compare the method's choices on
// the paper's 2-D mixture, whose noised score is analytic: each variant is
// trained by the real trainer (worker.Local) and then measured against the truth.
package study

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/model/samples"
	"github.com/ncsn/ncsn/worker"
)

// Losses are the estimators the study compares, in the order of its table.
var Losses = []string{model.LossDSM, model.LossSSM, model.LossSSMVR, model.LossFDSSM, model.LossESM}

// plainAlpha is plain Langevin's step: large enough that every chain settles
// in the mode nearest its start within the run, so the weights it reports are
// what the sampler keeps, not chains still on their way.
const plainAlpha = 0.05

// EstimatorsConfig configures the estimators study.
type EstimatorsConfig struct {
	// Steps is the number of training steps of every estimator (0: the gmm's run.steps).
	Steps int64
	// Sets are run-config overrides (key=value) applied to every run; data.name
	// must stay gmm, and train.loss is the study's to set.
	Sets []string
	// Out keeps each estimator's run in Out/<loss> and the table in
	// Out/estimators.md; "" trains in a temporary folder that is removed.
	Out string
	// HeldOut is the number of held-out points per σ level of the score
	// error (0: 1000), Samples the number of Langevin samples behind each
	// set of mode weights (0: 2000, a standard error of about 0.01 on 0.2).
	HeldOut, Samples int
	Logger           *slog.Logger
}

// EstimatorResult is one estimator's row.
type EstimatorResult struct {
	Loss string
	// SecPerStep is the wall time of a training step (forward, backward, update).
	SecPerStep float64
	// ScoreError is E‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖² per σ level (0: exact,
	// 1: a zero output), with the EMA weights.
	ScoreError []float64
	// Modes are the shares of annealed Langevin samples nearest each mean.
	Modes []float64
}

// SamplerResult is the mode weights one sampler reaches with one score.
type SamplerResult struct {
	Sampler string
	Score   string
	Modes   []float64
}

// EstimatorsReport is the study's outcome.
type EstimatorsReport struct {
	Config     config.Config // the DSM run's config (the others differ in train.loss)
	Means      [][]float64
	Truth      []float64
	Sigmas     []float64
	HeldOut    int
	Samples    int
	Estimators []EstimatorResult
	// Samplers compares plain Langevin from a uniform start with annealed
	// Langevin, with the DSM model and with the exact score.
	Samplers []SamplerResult
}

// Estimators trains every estimator of Losses on the mixture for the same
// steps, measures each, and compares plain with annealed Langevin.
func Estimators(ctx context.Context, c EstimatorsConfig) (*EstimatorsReport, error) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.HeldOut <= 0 {
		c.HeldOut = 1000
	}
	if c.Samples <= 0 {
		c.Samples = 2000
	}
	root := c.Out
	if root == "" {
		tmp, err := os.MkdirTemp("", "ncsn-study-")
		if err != nil {
			return nil, fmt.Errorf("study: %w", err)
		}
		defer os.RemoveAll(tmp)
		root = tmp
	}
	rep := &EstimatorsReport{HeldOut: c.HeldOut, Samples: c.Samples}
	var dsmParams []float32
	for _, loss := range Losses {
		rc, err := runConfig(c, loss)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(root, loss)
		if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
			return nil, fmt.Errorf("study: %s already holds a run; use an empty --out so that every estimator trains from the same start", dir)
		}
		log.Info("training", "loss", loss, "steps", rc.Run.Steps, "out", dir)
		params, sec, err := train(ctx, rc, dir)
		if err != nil {
			return nil, fmt.Errorf("study: %s: %w", loss, err)
		}
		log.Info("evaluating", "loss", loss, "sec_per_step", sec)
		ev, err := samples.Evaluate(ctx, rc, params, samples.EvalOptions{HeldOut: c.HeldOut, Samples: c.Samples, Seed: rc.Run.Seed, Sample: rc.Sample})
		if err != nil {
			return nil, fmt.Errorf("study: %s: %w", loss, err)
		}
		row := EstimatorResult{Loss: loss, SecPerStep: sec}
		for _, lv := range ev.Levels {
			row.ScoreError = append(row.ScoreError, model.ScoreError{Error: *lv.ScoreError, Baseline: *lv.ScoreErrorZero}.Relative())
		}
		for _, m := range ev.Modes {
			row.Modes = append(row.Modes, m.Sampled)
		}
		if loss == model.LossDSM {
			rep.Config, dsmParams = rc, params
			for _, m := range ev.Modes {
				rep.Means, rep.Truth = append(rep.Means, m.Mean), append(rep.Truth, m.Truth)
			}
			rep.Sigmas = rc.Noise.Sigmas()
		}
		rep.Estimators = append(rep.Estimators, row)
	}
	log.Info("sampling", "compare", "plain and annealed Langevin")
	if err := rep.compareSamplers(ctx, dsmParams, rep.Estimators[0].Modes); err != nil {
		return nil, err
	}
	if c.Out != "" {
		f, err := os.Create(filepath.Join(c.Out, "estimators.md"))
		if err != nil {
			return nil, fmt.Errorf("study: %w", err)
		}
		err = rep.Markdown(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("study: %w", err)
		}
	}
	return rep, nil
}

// runConfig is the gmm run of one estimator: the defaults, the user's
// overrides, then the study's own keys.
func runConfig(c EstimatorsConfig, loss string) (config.Config, error) {
	sets := append([]string{"data.name=gmm"}, c.Sets...)
	sets = append(sets, "train.loss="+loss, "run.samples=0")
	if c.Steps > 0 {
		sets = append(sets, "run.steps="+strconv.FormatInt(c.Steps, 10))
	}
	rc, err := config.Load("", sets)
	if err != nil {
		return rc, fmt.Errorf("study: %w", err)
	}
	if rc.Data.Name != data.NameGMM {
		return rc, fmt.Errorf("study: data.name %q: the estimators study needs gmm, whose score is analytic", rc.Data.Name)
	}
	// One checkpoint, at the end: the time per step is training's.
	rc.Run.CheckpointEvery = rc.Run.Steps
	return rc, nil
}

// train runs rc in dir and returns the weights to evaluate (the EMA's, as
// sampling uses by default) and the wall time per step. The run's own step
// lines stay quiet: the study logs per estimator.
func train(ctx context.Context, rc config.Config, dir string) ([]float32, float64, error) {
	l, err := worker.NewLocal(worker.LocalConfig{Run: rc, Out: dir})
	if err != nil {
		return nil, 0, err
	}
	defer l.Close()
	t0 := time.Now()
	if err := l.Run(ctx); err != nil {
		return nil, 0, err
	}
	sec := time.Since(t0).Seconds() / float64(rc.Run.Steps)
	params := l.State().EMA
	if params == nil {
		params = l.State().Params
	}
	return append([]float32(nil), params...), sec, nil
}

// compareSamplers fills r.Samplers: annealed and plain Langevin from the same
// uniform start, with the DSM model's weights and with the exact score.
// annealed are the DSM model's annealed mode weights, already measured.
func (r *EstimatorsReport) compareSamplers(ctx context.Context, dsm []float32, annealed []float64) error {
	rc := r.Config
	g, err := rc.Data.GMM()
	if err != nil {
		return fmt.Errorf("study: %w", err)
	}
	plain := model.SampleConfig{StepsPerLevel: rc.Sample.StepsPerLevel, Eps: plainAlpha}
	x, err := samples.Draw(ctx, rc, dsm, samples.Options{N: r.Samples, Seed: rc.Run.Seed, Sampler: "langevin", Sample: plain})
	if err != nil {
		return fmt.Errorf("study: %w", err)
	}
	r.Samplers = append(r.Samplers,
		SamplerResult{Sampler: r.annealedName(), Score: "dsm model", Modes: annealed},
		SamplerResult{Sampler: r.plainName(), Score: "dsm model", Modes: samples.ModeWeights(g, x)})
	// The exact score from the same start (samples.Draw's for 2-D data): what
	// plain Langevin keeps is the sampler's doing, not the model's.
	batch := min(r.Samples, 1000)
	smp := &model.Sampler{Model: &exactScore{g: g}, Batch: batch, Dim: g.Dim(), Seed: rc.Run.Seed}
	sigmas := rc.Noise.Sigmas()
	model.InitUniform(x, -8, 8, rc.Run.Seed)
	if err := smp.Annealed(ctx, x, sigmas, rc.Sample); err != nil {
		return fmt.Errorf("study: %w", err)
	}
	r.Samplers = append(r.Samplers, SamplerResult{Sampler: r.annealedName(), Score: "exact score", Modes: samples.ModeWeights(g, x)})
	model.InitUniform(x, -8, 8, rc.Run.Seed)
	if err := smp.Langevin(ctx, x, sigmas[len(sigmas)-1], plain.StepsPerLevel*len(sigmas), plainAlpha); err != nil {
		return fmt.Errorf("study: %w", err)
	}
	r.Samplers = append(r.Samplers, SamplerResult{Sampler: r.plainName(), Score: "exact score", Modes: samples.ModeWeights(g, x)})
	return nil
}

func (r *EstimatorsReport) annealedName() string {
	s := r.Config.Sample
	return fmt.Sprintf("annealed Langevin (%d levels × %d steps, ε = %g)", len(r.Sigmas), s.StepsPerLevel, s.Eps)
}

func (r *EstimatorsReport) plainName() string {
	return fmt.Sprintf("plain Langevin at σ = %g (%d steps, α = %g)", r.Sigmas[len(r.Sigmas)-1], r.Config.Sample.StepsPerLevel*len(r.Sigmas), plainAlpha)
}

// exactScore is the mixture's analytic noised score as a sampler's model.
type exactScore struct {
	g    *data.GMM
	x, s []float64
}

func (e *exactScore) Score(x, sigma, out []float32) error {
	d := e.g.Dim()
	if len(x) != len(sigma)*d || len(out) != len(x) {
		return errors.New("study: exact score: x, sigma and out disagree in size")
	}
	if len(e.x) != d {
		e.x, e.s = make([]float64, d), make([]float64, d)
	}
	for b, sg := range sigma {
		for j := range e.x {
			e.x[j] = float64(x[b*d+j])
		}
		e.g.Score(e.x, float64(sg), e.s)
		for j, v := range e.s {
			out[b*d+j] = float32(v)
		}
	}
	return nil
}

// Markdown writes the report as the tables of the study.
func (r *EstimatorsReport) Markdown(w io.Writer) error {
	rc := r.Config
	var b strings.Builder
	means := make([]string, len(r.Means))
	for k, m := range r.Means {
		means[k] = vec(m)
	}
	cov := "I"
	if v := rc.Data.Std * rc.Data.Std; v != 1 {
		cov = fmt.Sprintf("%g·I", v)
	}
	mix := make([]string, len(r.Means))
	for k := range r.Means {
		mix[k] = fmt.Sprintf("%g·N(%s, %s)", r.Truth[k], means[k], cov)
	}
	fmt.Fprintf(&b, "## Score-matching estimators on %s\n\n", strings.Join(mix, " + "))
	fmt.Fprintf(&b, "Each estimator trains %d steps of batch %d (%s, Adam lr %g, EMA %g, λ(σ) = σ^%g, %s projections × %d, fd_eps %g) "+
		"over %d σ levels %g → %g, then is measured with its EMA weights.\n",
		rc.Run.Steps, rc.Train.GlobalBatch, rc.Model.Arch, rc.Train.LR, rc.Train.EMA, rc.Train.AnnealPower,
		rc.Train.Projection, rc.Train.Particles, rc.Train.FDEps, len(r.Sigmas), r.Sigmas[0], r.Sigmas[len(r.Sigmas)-1])
	fmt.Fprintf(&b, "Score error per σ: E‖s_θ(x̃, σ) − ∇log p_σ(x̃)‖² / E‖∇log p_σ(x̃)‖² over %d held-out points "+
		"(0 is exact, 1 is a zero output). Modes: share of %d annealed Langevin samples nearest each mean. "+
		"s/step: wall time of one training step on this machine.\n\n", r.HeldOut, r.Samples)
	b.WriteString("| estimator | s/step |")
	for _, s := range r.Sigmas {
		fmt.Fprintf(&b, " σ=%.3g |", s)
	}
	fmt.Fprintf(&b, " modes %s |\n|---|---:|", strings.Join(means, " / "))
	for range r.Sigmas {
		b.WriteString("---:|")
	}
	b.WriteString("---:|\n")
	for _, e := range r.Estimators {
		fmt.Fprintf(&b, "| %s | %.2e |", e.Loss, e.SecPerStep)
		for _, v := range e.ScoreError {
			fmt.Fprintf(&b, " %.3f |", v)
		}
		fmt.Fprintf(&b, " %s |\n", shares(e.Modes))
	}
	b.WriteString("| truth | |")
	for range r.Sigmas {
		b.WriteString(" |")
	}
	fmt.Fprintf(&b, " %s |\n\n", shares(r.Truth))
	fmt.Fprintf(&b, "### Plain vs annealed Langevin, %d samples from U[−8, 8]^%d\n\n", r.Samples, len(r.Means[0]))
	fmt.Fprintf(&b, "| sampler | score | %s |\n|---|---|%s\n", strings.Join(means, " | "), strings.Repeat("---:|", len(means)))
	for _, s := range r.Samplers {
		fmt.Fprintf(&b, "| %s | %s |", s.Sampler, s.Score)
		for _, m := range s.Modes {
			fmt.Fprintf(&b, " %.3f |", m)
		}
		b.WriteString("\n")
	}
	b.WriteString("| truth | |")
	for _, m := range r.Truth {
		fmt.Fprintf(&b, " %.3f |", m)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func vec(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'g', -1, 64)
	}
	return "(" + strings.Join(s, ",") + ")"
}

func shares(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 3, 64)
	}
	return strings.Join(s, " / ")
}
