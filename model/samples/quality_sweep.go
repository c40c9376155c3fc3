package samples

import (
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/ncsn/ncsn/internal/plot"
	"github.com/ncsn/ncsn/model"
)

// Checkpoints lists the checkpoint files (ckpt-<step>.safetensors) of a
// checkpoints folder or of a run folder holding one, oldest first.
func Checkpoints(dir string) ([]string, error) {
	if sub := filepath.Join(dir, "checkpoints"); isDir(sub) {
		dir = sub
	}
	if !isDir(dir) {
		return nil, fmt.Errorf("samples: %s is not a folder of checkpoints (--all scores every checkpoint of a run folder)", dir)
	}
	paths, err := (&model.CheckpointDir{Dir: dir}).Newest()
	if err != nil {
		return nil, fmt.Errorf("samples: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("samples: no checkpoints (ckpt-<step>.safetensors) in %s", dir)
	}
	slices.Reverse(paths)
	return paths, nil
}

// Sweep evaluates the checkpoints at paths in turn, each loaded by load and
// measured by Evaluate with o, sampling with the settings of the config load
// returns (one Reference serves them all, so they must be runs on one data
// set). done is called with each report as it is ready.
func Sweep(ctx context.Context, paths []string, load func(path string) (*Loaded, error), o EvalOptions, done func(*Report) error) ([]*Report, error) {
	var out []*Report
	var first *Loaded
	for _, p := range paths {
		l, err := load(p)
		if err != nil {
			return out, err
		}
		if first == nil {
			first = l
		} else if !reflect.DeepEqual(l.Config.Data, first.Config.Data) || !slices.Equal(l.Config.Shape(), first.Config.Shape()) {
			return out, fmt.Errorf("samples: %s is a run on other data than %s: a sweep compares checkpoints of one run", p, first.Path)
		}
		o.Sample = l.Config.Sample
		r, err := Evaluate(ctx, l.Config, l.Params, o)
		if err != nil {
			return out, fmt.Errorf("samples: %s: %w", p, err)
		}
		r.Step = l.Checkpoint.Step
		out = append(out, r)
		if err := done(r); err != nil {
			return out, err
		}
	}
	return out, nil
}

// MeanHeldOutLoss is the held-out loss averaged over the levels.
func (r *Report) MeanHeldOutLoss() float64 {
	var s float64
	for _, l := range r.Levels {
		s += l.HeldOutLoss
	}
	return s / float64(max(1, len(r.Levels)))
}

// WriteSweep writes the reports of a sweep as dir/eval.csv (one line per
// checkpoint) and dir/eval.png (FID and KID, or the energy distance, against
// the step, each beside its floor; the mean held-out loss when no samples
// were scored). It returns the two paths.
func WriteSweep(dir string, reports []*Report) (csvPath, pngPath string, err error) {
	if len(reports) == 0 {
		return "", "", fmt.Errorf("samples: no reports to write")
	}
	cols := []string{"step"}
	value := []func(*Report) float64{func(r *Report) float64 { return float64(r.Step) }}
	add := func(name string, f func(*Report) float64) {
		cols, value = append(cols, name), append(value, f)
	}
	q := reports[0].Quality
	switch {
	case q != nil && q.Images != nil:
		img := func(f func(*ImageQuality) float64) func(*Report) float64 {
			return func(r *Report) float64 { return f(r.Quality.Images) }
		}
		add("fid", img(func(q *ImageQuality) float64 { return q.FID }))
		add("kid", img(func(q *ImageQuality) float64 { return q.KID }))
		add("kid_std", img(func(q *ImageQuality) float64 { return q.KIDStd }))
		add("floor_fid", img(func(q *ImageQuality) float64 { return q.FloorFID }))
		add("floor_kid", img(func(q *ImageQuality) float64 { return q.FloorKID }))
		add("nn_distance", img(func(q *ImageQuality) float64 { return q.NNDistance }))
		add("nn_distance_real", img(func(q *ImageQuality) float64 { return q.NNDistanceReal }))
	case q != nil && q.Points != nil:
		add("energy_distance", func(r *Report) float64 { return r.Quality.Points.Energy })
		add("floor_energy_distance", func(r *Report) float64 { return r.Quality.Points.FloorEnergy })
	}
	add("held_out_loss", (*Report).MeanHeldOutLoss)
	for _, r := range reports {
		if (r.Quality == nil) != (q == nil) || (q != nil && (r.Quality.Images == nil) != (q.Images == nil)) {
			return "", "", fmt.Errorf("samples: step %d was scored differently from step %d", r.Step, reports[0].Step)
		}
	}
	var b strings.Builder
	b.WriteString(strings.Join(cols, ","))
	b.WriteByte('\n')
	table := make([][]float64, len(cols))
	for _, r := range reports {
		for i, f := range value {
			v := f(r)
			table[i] = append(table[i], v)
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatFloat(v, 'g', 6, 64))
		}
		b.WriteByte('\n')
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("samples: %w", err)
	}
	csvPath, pngPath = filepath.Join(dir, "eval.csv"), filepath.Join(dir, "eval.png")
	if err := os.WriteFile(csvPath, []byte(b.String()), 0o644); err != nil {
		return "", "", fmt.Errorf("samples: %w", err)
	}
	col := func(name string) []float64 { return table[slices.Index(cols, name)] }
	steps := table[0]
	ds := reports[0].Dataset
	chart := func(title, ylabel string, series ...plot.Series) (*image.RGBA, error) {
		return plot.Lines(title, "step", ylabel, steps, series)
	}
	var charts []*image.RGBA
	switch {
	case q != nil && q.Images != nil:
		fid, err := chart(fmt.Sprintf("FID of %d samples (ncsn's %s classifier)", q.N, ds), "FID",
			plot.Series{Name: "samples", Y: col("fid")}, plot.Series{Name: "floor (real)", Y: col("floor_fid")})
		if err != nil {
			return "", "", err
		}
		kid, err := chart(fmt.Sprintf("KID of %d samples", q.N), "KID",
			plot.Series{Name: "samples", Y: col("kid")}, plot.Series{Name: "floor (real)", Y: col("floor_kid")})
		if err != nil {
			return "", "", err
		}
		charts = append(charts, fid, kid)
	case q != nil:
		e, err := chart(fmt.Sprintf("energy distance of %d samples to %s", q.N, ds), "energy distance",
			plot.Series{Name: "samples", Y: col("energy_distance")}, plot.Series{Name: "floor (true)", Y: col("floor_energy_distance")})
		if err != nil {
			return "", "", err
		}
		charts = append(charts, e)
	default:
		l, err := chart(fmt.Sprintf("%s: mean held-out DSM loss", ds), "loss", plot.Series{Name: "held-out", Y: col("held_out_loss")})
		if err != nil {
			return "", "", err
		}
		charts = append(charts, l)
	}
	if err := plot.WritePNG(pngPath, plot.Stack(charts...)); err != nil {
		return "", "", err
	}
	return csvPath, pngPath, nil
}
