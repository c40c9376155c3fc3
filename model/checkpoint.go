package model

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ncsn/ncsn/internal/safetensors"
)

// CheckpointFormat is the version of the checkpoint layout in
// __metadata__["format"]; readers refuse other versions.
const CheckpointFormat = "ncsn/1"

// Metadata keys of a checkpoint.
const (
	MetaFormat = "format"
	MetaStep   = "step"   // decimal: updates applied
	MetaConfig = "config" // the run config as JSON
	MetaSeed   = "seed"
	// MetaDataPosition is the global sample position the next step starts at (step·B).
	MetaDataPosition = "data_position"
)

// ErrCorrupt marks a checkpoint file that does not verify.
var ErrCorrupt = safetensors.ErrCorrupt

// Checkpoint is a State with the tensor layout and the run's metadata.
type Checkpoint struct {
	Layout *Params // names, shapes, offsets; Data holds the parameters
	EMA    []float32
	M, V   []float32
	Step   int64
	Meta   map[string]string
}

// NewCheckpoint captures s (copying nothing: write it before s changes) with
// the tensor names and shapes of layout.
func NewCheckpoint(layout *Params, s *State, meta map[string]string) *Checkpoint {
	p := *layout
	p.Data = s.Params
	return &Checkpoint{Layout: &p, EMA: s.EMA, M: s.Adam.M, V: s.Adam.V, Step: s.Adam.Step, Meta: meta}
}

// RunMeta is what a run records beside the tensors of each of its checkpoints
// (MetaConfig, MetaSeed, MetaDataPosition), and how it recognises its own
// checkpoints when it resumes. Every writer of run checkpoints builds the
// metadata here; the run configuration fills it (config.Config.CheckpointRun)
// and decides what makes a run the same (config.Config.SameRun).
type RunMeta struct {
	Config []byte // the run config as JSON
	Seed   uint64
	Batch  int // the global batch: the data position after step s is s·Batch
	// SameRun tells whether a checkpoint's stored config is this run's, or why
	// not (nil: the same bytes).
	SameRun func(stored []byte) error
}

func (m RunMeta) metadata(step int64) map[string]string {
	return map[string]string{
		MetaConfig:       string(m.Config),
		MetaSeed:         strconv.FormatUint(m.Seed, 10),
		MetaDataPosition: strconv.FormatInt(step*int64(m.Batch), 10),
	}
}

// NewRunCheckpoint captures s (copying nothing: write it before s changes)
// with the tensor layout of layout and run's metadata.
func NewRunCheckpoint(layout *Params, s *State, run RunMeta) *Checkpoint {
	return NewCheckpoint(layout, s, run.metadata(s.Step()))
}

// Resume restores into s the newest checkpoint in d that verifies, after
// checking it was written by run. It returns the checkpoint's path, or an
// error wrapping os.ErrNotExist when there is none. A checkpoint of another
// run is an error, not skipped: the folder belongs to someone else.
func (d *CheckpointDir) Resume(layout *Params, s *State, run RunMeta) (string, error) {
	c, path, err := d.Latest(layout)
	if err != nil {
		return "", err
	}
	stored := []byte(c.Meta[MetaConfig])
	if run.SameRun != nil {
		err = run.SameRun(stored)
	} else if string(stored) != string(run.Config) {
		err = errors.New("its config differs; use another --out or the same config")
	}
	if err != nil {
		return "", fmt.Errorf("model: %s belongs to another run: %w", path, err)
	}
	if err := c.Restore(s); err != nil {
		return "", fmt.Errorf("model: resume from %s: %w", path, err)
	}
	return path, nil
}

// CopyState makes a deep copy of s, reusing dst's buffers when dst (which
// may be nil) has s's sizes: the snapshot a checkpoint is written from while
// s moves on.
func CopyState(dst, s *State) *State {
	if dst != nil && len(dst.Adam.M) == len(s.Adam.M) && dst.CopyFrom(s) == nil {
		dst.decay = s.decay
		return dst
	}
	a := *s.Adam
	a.M, a.V = slices.Clone(s.Adam.M), slices.Clone(s.Adam.V)
	return &State{Params: slices.Clone(s.Params), EMA: slices.Clone(s.EMA), Adam: &a, decay: s.decay}
}

// Restore copies the checkpoint into s, which must have the same layout.
func (c *Checkpoint) Restore(s *State) error {
	if len(c.Layout.Data) != len(s.Params) {
		return fmt.Errorf("model: checkpoint has %d parameters, the model %d", len(c.Layout.Data), len(s.Params))
	}
	if (c.EMA == nil) != (s.EMA == nil) {
		return fmt.Errorf("model: checkpoint and run disagree on whether an EMA is kept")
	}
	copy(s.Params, c.Layout.Data)
	copy(s.EMA, c.EMA)
	copy(s.Adam.M, c.M)
	copy(s.Adam.V, c.V)
	s.Adam.Step = c.Step
	return nil
}

// WriteCheckpoint writes c to path atomically as safetensors: tensors
// param/<name>, ema/<name>, adam_m/<name>, adam_v/<name>.
func WriteCheckpoint(path string, c *Checkpoint) error {
	return writeCheckpoint(safetensors.Writer{}, path, c)
}

func writeCheckpoint(w safetensors.Writer, path string, c *Checkpoint) error {
	f := &safetensors.File{Metadata: map[string]string{}}
	for k, v := range c.Meta {
		f.Metadata[k] = v
	}
	f.Metadata[MetaFormat] = CheckpointFormat
	f.Metadata[MetaStep] = strconv.FormatInt(c.Step, 10)
	l := c.Layout
	for _, g := range []struct {
		prefix string
		data   []float32
	}{{"param/", l.Data}, {"ema/", c.EMA}, {"adam_m/", c.M}, {"adam_v/", c.V}} {
		if g.data == nil {
			continue
		}
		for i, name := range l.Names {
			n := prod(l.Shapes[i])
			if err := f.AddF32(g.prefix+name, l.Shapes[i], g.data[l.Offsets[i]:l.Offsets[i]+n]); err != nil {
				return fmt.Errorf("model: checkpoint %s: %w", path, err)
			}
		}
	}
	if err := w.WriteFile(path, f); err != nil {
		return fmt.Errorf("model: write checkpoint: %w", err)
	}
	return nil
}

// ReadCheckpoint reads and verifies the checkpoint at path. Its tensors are
// laid out in the order of layout's names, which must all be present with
// the same shapes (the checkpoint of another architecture is refused).
func ReadCheckpoint(path string, layout *Params) (*Checkpoint, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model: read checkpoint: %w", err)
	}
	if v := f.Metadata[MetaFormat]; v != CheckpointFormat {
		return nil, fmt.Errorf("model: checkpoint %s: format %q, want %q", path, v, CheckpointFormat)
	}
	step, err := strconv.ParseInt(f.Metadata[MetaStep], 10, 64)
	if err != nil || step < 0 {
		return nil, fmt.Errorf("model: checkpoint %s: bad step %q", path, f.Metadata[MetaStep])
	}
	c := &Checkpoint{Step: step, Meta: f.Metadata}
	p := *layout
	p.Data = nil
	c.Layout = &p
	total := len(layout.Data)
	read := func(prefix string, required bool) ([]float32, error) {
		if _, ok := f.Tensor(prefix + layout.Names[0]); !ok && !required {
			return nil, nil
		}
		out := make([]float32, total)
		for i, name := range layout.Names {
			v, shape, err := f.F32(prefix + name)
			if err != nil {
				return nil, fmt.Errorf("model: checkpoint %s: %w", path, err)
			}
			if !slices.Equal(shape, layout.Shapes[i]) {
				return nil, fmt.Errorf("model: checkpoint %s: %s%s has shape %v, the model %v", path, prefix, name, shape, layout.Shapes[i])
			}
			copy(out[layout.Offsets[i]:], v)
		}
		return out, nil
	}
	if p.Data, err = read("param/", true); err != nil {
		return nil, err
	}
	if c.EMA, err = read("ema/", false); err != nil {
		return nil, err
	}
	if c.M, err = read("adam_m/", true); err != nil {
		return nil, err
	}
	if c.V, err = read("adam_v/", true); err != nil {
		return nil, err
	}
	return c, nil
}

// CheckpointDir keeps a run's checkpoints: ckpt-<step>.safetensors in Dir,
// the newest Keep of them.
type CheckpointDir struct {
	Dir    string
	Keep   int
	Logger *slog.Logger
	// Writer writes the files; tests inject faults through it.
	Writer safetensors.Writer
}

// CheckpointName is the file name of the checkpoint of step.
func CheckpointName(step int64) string { return fmt.Sprintf("ckpt-%d.safetensors", step) }

// Save writes c as the checkpoint of its step and removes all but the newest Keep.
func (d *CheckpointDir) Save(c *Checkpoint) (string, error) {
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return "", fmt.Errorf("model: checkpoints: %w", err)
	}
	path := filepath.Join(d.Dir, CheckpointName(c.Step))
	if err := writeCheckpoint(d.Writer, path, c); err != nil {
		return "", err
	}
	steps, err := d.steps()
	if err != nil {
		return path, err
	}
	for i := 0; i+max(d.Keep, 1) < len(steps); i++ {
		if err := os.Remove(filepath.Join(d.Dir, CheckpointName(steps[i]))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return path, fmt.Errorf("model: prune checkpoints: %w", err)
		}
	}
	return path, nil
}

// steps lists the steps of the checkpoint files present, oldest first.
func (d *CheckpointDir) steps() ([]int64, error) {
	ents, err := os.ReadDir(d.Dir)
	if err != nil {
		return nil, fmt.Errorf("model: checkpoints: %w", err)
	}
	var steps []int64
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), "ckpt-")
		if !ok {
			continue
		}
		s, ok = strings.CutSuffix(s, ".safetensors")
		if n, err := strconv.ParseInt(s, 10, 64); ok && err == nil && n >= 0 {
			steps = append(steps, n)
		}
	}
	slices.Sort(steps)
	return steps, nil
}

// Newest lists the paths of the checkpoint files present, newest first.
func (d *CheckpointDir) Newest() ([]string, error) {
	steps, err := d.steps()
	if err != nil {
		return nil, err
	}
	paths := make([]string, len(steps))
	for i, s := range steps {
		paths[len(steps)-1-i] = filepath.Join(d.Dir, CheckpointName(s))
	}
	return paths, nil
}

// Latest loads the newest checkpoint that verifies, skipping (with a
// warning) files that do not. It returns os.ErrNotExist when there is none.
func (d *CheckpointDir) Latest(layout *Params) (*Checkpoint, string, error) {
	if _, err := os.Stat(d.Dir); errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("model: no checkpoints in %s: %w", d.Dir, os.ErrNotExist)
	}
	if removed, err := safetensors.CleanTemp(d.Dir); err == nil && len(removed) > 0 && d.Logger != nil {
		d.Logger.Warn("removed temporary files of interrupted checkpoint writes", "files", removed)
	}
	paths, err := d.Newest()
	if err != nil {
		return nil, "", err
	}
	for _, path := range paths {
		c, err := ReadCheckpoint(path, layout)
		if err == nil {
			return c, path, nil
		}
		if d.Logger != nil {
			d.Logger.Warn("skipping checkpoint that does not load", "path", path, "err", err)
		}
	}
	return nil, "", fmt.Errorf("model: no loadable checkpoint in %s: %w", d.Dir, os.ErrNotExist)
}
