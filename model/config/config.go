// Package config owns the run configuration: the one YAML file of DESIGN.md,
// its defaults per dataset, `--set key=value` overrides, and validation that
// names the offending key before anything starts.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
)

// Config is a whole run's configuration. Every key can be set in the file or by --set.
type Config struct {
	Run       Run                `yaml:"run" json:"run"`
	Data      data.Config        `yaml:"data" json:"data"`
	Model     model.Config       `yaml:"model" json:"model"`
	Noise     model.NoiseConfig  `yaml:"noise" json:"noise"`
	Train     Train              `yaml:"train" json:"train"`
	Sample    model.SampleConfig `yaml:"sample" json:"sample"`
	AllReduce AllReduce          `yaml:"allreduce" json:"allreduce"`
	Cluster   Cluster            `yaml:"cluster" json:"cluster"`
	// Auto lists the keys set to auto, which Resolve fills from the data. It is
	// not a section: YAML writes those keys as auto, and stored configs are resolved.
	Auto Auto `yaml:"-" json:"-"`
}

// Run is the run's identity and length.
type Run struct {
	// ID names the run; workers of another run are refused.
	ID   string `yaml:"id" json:"id"`
	Seed uint64 `yaml:"seed" json:"seed"`
	// Steps is the number of optimizer steps of the whole run.
	Steps int64 `yaml:"steps" json:"steps"`
	// CheckpointEvery writes a checkpoint every this many steps (and at the end).
	CheckpointEvery int64 `yaml:"checkpoint_every" json:"checkpoint_every"`
	// Keep is how many of the newest checkpoints are kept.
	Keep int `yaml:"keep" json:"keep"`
	// LogEvery is the number of steps between log lines.
	LogEvery int64 `yaml:"log_every" json:"log_every"`
	// Samples is how many samples the run draws at its end (0: none).
	Samples int `yaml:"samples" json:"samples"`
	// SampleEvery draws a snapshot grid from the EMA weights every this many
	// steps into DIR/snapshots (0: never).
	SampleEvery int64 `yaml:"sample_every" json:"sample_every"`
	// SnapshotSamples is how many samples a snapshot draws.
	SnapshotSamples int `yaml:"snapshot_samples" json:"snapshot_samples"`
	// Origin is the checkpoint a run started from with --resume ("PATH@STEP"), kept in
	// every checkpoint's config; empty for a run started from scratch.
	Origin string `yaml:"origin,omitempty" json:"origin,omitempty"`
}

// Train holds the optimizer settings.
type Train struct {
	// GlobalBatch is the batch of one step, summed over all workers; it does
	// not change with the number of workers.
	GlobalBatch      int `yaml:"global_batch" json:"global_batch"`
	model.AdamConfig `yaml:",inline" json:",inline"`
	// EMA is the decay of the parameters' exponential moving average (0 disables it).
	EMA float64 `yaml:"ema" json:"ema"`
	// LossConfig is the objective: train.loss (dsm, ssm, ssm_vr, fd_ssm, esm),
	// train.anneal_power (λ(σ) = σ^p), train.projection, train.n_particles, train.fd_eps.
	model.LossConfig `yaml:",inline" json:",inline"`
}

// AllReduce selects how gradients travel between workers.
type AllReduce struct {
	Codec      string   `yaml:"codec" json:"codec"`           // allreduce.Quants(): none, bf16, int8, ...
	Compressor string   `yaml:"compressor" json:"compressor"` // allreduce.Compressors(): none, zstd, s2
	ChunkBytes int      `yaml:"chunk_bytes" json:"chunk_bytes"`
	Timeout    Duration `yaml:"timeout" json:"timeout"`
	// SameHost is how workers on one host (kernel and network namespace) reach each other:
	// "unix" sockets where the system allows, else TCP; or "tcp" always.
	SameHost string `yaml:"same_host" json:"same_host"`
}

// Cluster holds the membership settings.
type Cluster struct {
	// MinWorkers is the number of workers below which training waits.
	MinWorkers int `yaml:"min_workers" json:"min_workers"`
	// MaxWorkers caps the ring (0: as many as the global batch allows); joins beyond it are refused.
	MaxWorkers int `yaml:"max_workers" json:"max_workers"`
	// HashEvery is the number of steps between replicas' state-hash reports.
	HashEvery int64 `yaml:"hash_every" json:"hash_every"`
	// ProbeInterval and ProbeTimeout tune memberlist's failure detector; a silent
	// node is declared dead after about SuspicionMult probe intervals.
	ProbeInterval Duration `yaml:"probe_interval" json:"probe_interval"`
	ProbeTimeout  Duration `yaml:"probe_timeout" json:"probe_timeout"`
	SuspicionMult int      `yaml:"suspicion_mult" json:"suspicion_mult"`
}

// Duration is a time.Duration written as "30s" in YAML and JSON.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("want a duration like 30s: %w", err)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// isImage tells whether a dataset is made of images (trained with the U-Net).
func isImage(name string) bool {
	switch name {
	case data.NameSynthetic, data.NameMNIST, data.NameFashionMNIST, data.NameCIFAR10:
		return true
	}
	return false
}

// Default is the configuration of a dataset before the user's file and
// overrides: the published NCSN settings scaled to what 2 cores can run.
// Default("") is the embedded default job.
func Default(dataset string) Config {
	if dataset == "" {
		dataset = data.NameSynthetic
	}
	c := Config{
		Run:       Run{ID: "ncsn", Seed: 1, Steps: 2000, CheckpointEvery: 500, Keep: 3, LogEvery: 20, Samples: 64, SnapshotSamples: 64},
		Data:      data.Config{Name: dataset},
		Train:     Train{GlobalBatch: 128, AdamConfig: model.AdamConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, EMA: 0.999, LossConfig: model.DefaultLoss()},
		AllReduce: AllReduce{Codec: "none", Compressor: "none", ChunkBytes: 2 << 20, Timeout: Duration(10 * time.Second), SameHost: "unix"},
		Cluster: Cluster{MinWorkers: 1, HashEvery: 10, ProbeInterval: Duration(500 * time.Millisecond),
			ProbeTimeout: Duration(250 * time.Millisecond), SuspicionMult: 2},
	}
	if isImage(dataset) {
		c.Model = model.Config{Arch: "unet"}
		// NCSNv2's recipe: σ_1 the largest pairwise distance (technique 1), L
		// from the γ rule (technique 2), T = 5 and ε from T and γ (technique 3).
		c.Noise = model.NoiseConfig{SigmaMin: 0.01}
		c.Sample = model.SampleConfig{StepsPerLevel: 5, Denoise: true}
		c.Auto = Auto{SigmaMax: true, Levels: true, Eps: true}
		c.Data.Dequantize = dataset != data.NameSynthetic
		// Mirrored photographs are photographs; mirrored digits and garments' text are not.
		c.Data.Flip = dataset == data.NameCIFAR10
		c.Run.SampleEvery = 500
	} else {
		c.Model = model.Config{Arch: "mlp"}
		c.Noise = model.NoiseConfig{SigmaMax: 20, SigmaMin: 0.1, Levels: 10}
		// σ_L²/ε = 10 steps: each level equilibrates within its 100 steps.
		c.Sample = model.SampleConfig{StepsPerLevel: 100, Eps: 1e-3, Denoise: true}
		c.Train.GlobalBatch = 256
		// The toy's mode weights need an accurate score at the middle levels:
		// 5000 steps put them within 0.01 of the truth, 1500 only within 0.05.
		c.Run.Steps, c.Run.CheckpointEvery = 5000, 1000
		c.Run.Samples = 5000
		c.Run.SnapshotSamples = 1000
	}
	if dataset == data.NameSynthetic {
		// The embedded default job: a few minutes on 2 cores. 16×16 images
		// (a quarter of the pixels of 28×28) and a quarter-width U-Net let it
		// take 1500 steps, enough for every sample to show a shape.
		c.Run.Steps, c.Run.CheckpointEvery = 1500, 500
		c.Train.GlobalBatch = 64
		c.Model.Channels = []int{16, 32, 64}
		c.Data.ImageSize = 16
	}
	return c
}

// Load reads the YAML file at path ("" for none), applies the --set
// overrides ("key.path=value", value in YAML syntax) over it, fills defaults
// for the chosen dataset and validates the result.
func Load(path string, sets []string) (Config, error) {
	var root yaml.Node
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if err := yaml.Unmarshal(b, &root); err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	doc := mapping(&root)
	if doc == nil {
		return Config{}, fmt.Errorf("config: %s: the top level must be a mapping of sections (run, data, model, ...)", path)
	}
	for _, s := range sets {
		if err := set(doc, s); err != nil {
			return Config{}, fmt.Errorf("config: --set %s: %w", s, err)
		}
	}
	if err := checkKeys(doc, reflect.TypeOf(Config{}), ""); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	name := data.NameSynthetic
	if n := lookup(doc, "data", "name"); n != nil {
		name = n.Value
	}
	c := Default(name)
	// Keys set to auto leave the document before it is decoded into numbers.
	c.Auto.take(doc)
	if len(doc.Content) > 0 {
		if err := doc.Decode(&c); err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
	}
	c = c.WithDefaults()
	if err := c.check(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// WithDefaults fills the defaults that the sections themselves own.
func (c Config) WithDefaults() Config {
	c.Data = c.Data.WithDefaults()
	c.Model = c.Model.WithDefaults()
	return c
}

// Validate checks every section and the constraints between them. Keys
// still set to auto are refused: a run resolves them (Resolve) before it starts.
func (c Config) Validate() error {
	if keys := c.Auto.Keys(); len(keys) > 0 {
		return fmt.Errorf("%s: auto has not been resolved from the data; resolve the config when the run starts (`ncsn plan` shows what auto becomes)", keys[0])
	}
	return c.check()
}

// check is Validate for a config that may still hold keys set to auto.
func (c Config) check() error {
	switch {
	case c.Run.ID == "" || strings.ContainsAny(c.Run.ID, " \t\n/"):
		return fmt.Errorf("run.id: %q, want a non-empty name without spaces or slashes", c.Run.ID)
	case c.Run.Steps < 1:
		return fmt.Errorf("run.steps: %d, want >= 1", c.Run.Steps)
	case c.Run.CheckpointEvery < 1:
		return fmt.Errorf("run.checkpoint_every: %d, want >= 1", c.Run.CheckpointEvery)
	case c.Run.Keep < 1:
		return fmt.Errorf("run.keep: %d, want >= 1", c.Run.Keep)
	case c.Run.LogEvery < 1:
		return fmt.Errorf("run.log_every: %d, want >= 1", c.Run.LogEvery)
	case c.Run.Samples < 0:
		return fmt.Errorf("run.samples: %d, want >= 0", c.Run.Samples)
	case c.Run.SampleEvery < 0:
		return fmt.Errorf("run.sample_every: %d, want >= 0 (0: no snapshots)", c.Run.SampleEvery)
	case c.Run.SnapshotSamples < 1:
		return fmt.Errorf("run.snapshot_samples: %d, want >= 1", c.Run.SnapshotSamples)
	case c.Train.GlobalBatch < 1:
		return fmt.Errorf("train.global_batch: %d, want >= 1", c.Train.GlobalBatch)
	case !(c.Train.EMA >= 0 && c.Train.EMA < 1):
		return fmt.Errorf("train.ema: %v, want [0, 1)", c.Train.EMA)
	case c.Cluster.MinWorkers < 1:
		return fmt.Errorf("cluster.min_workers: %d, want >= 1", c.Cluster.MinWorkers)
	case c.Cluster.MinWorkers > c.Train.GlobalBatch:
		return fmt.Errorf("cluster.min_workers: %d workers cannot share train.global_batch %d", c.Cluster.MinWorkers, c.Train.GlobalBatch)
	case c.Cluster.MaxWorkers < 0 || (c.Cluster.MaxWorkers > 0 && c.Cluster.MaxWorkers < c.Cluster.MinWorkers):
		return fmt.Errorf("cluster.max_workers: %d, want 0 (no cap) or >= cluster.min_workers %d", c.Cluster.MaxWorkers, c.Cluster.MinWorkers)
	case c.Cluster.HashEvery < 1:
		return fmt.Errorf("cluster.hash_every: %d, want >= 1", c.Cluster.HashEvery)
	case c.Cluster.ProbeInterval <= 0 || c.Cluster.ProbeTimeout <= 0 || c.Cluster.ProbeTimeout > c.Cluster.ProbeInterval:
		return fmt.Errorf("cluster.probe_interval %v, cluster.probe_timeout %v: want 0 < timeout <= interval", c.Cluster.ProbeInterval, c.Cluster.ProbeTimeout)
	case c.Cluster.SuspicionMult < 1:
		return fmt.Errorf("cluster.suspicion_mult: %d, want >= 1", c.Cluster.SuspicionMult)
	case !slices.Contains(allreduce.Quants(), c.AllReduce.Codec):
		return fmt.Errorf("allreduce.codec: %q, want one of %s", c.AllReduce.Codec, strings.Join(allreduce.Quants(), ", "))
	case !slices.Contains(allreduce.Compressors(), c.AllReduce.Compressor):
		return fmt.Errorf("allreduce.compressor: %q, want one of %s", c.AllReduce.Compressor, strings.Join(allreduce.Compressors(), ", "))
	case c.AllReduce.ChunkBytes < 1024:
		return fmt.Errorf("allreduce.chunk_bytes: %d, want >= 1024", c.AllReduce.ChunkBytes)
	case c.AllReduce.Timeout <= 0:
		return fmt.Errorf("allreduce.timeout: %v, want > 0", time.Duration(c.AllReduce.Timeout))
	case c.AllReduce.SameHost != "unix" && c.AllReduce.SameHost != "tcp":
		return fmt.Errorf("allreduce.same_host: %q, want unix or tcp", c.AllReduce.SameHost)
	}
	if err := c.Data.Validate(); err != nil {
		return err
	}
	shape := c.Shape()
	// Keys set to auto get stand-ins that pass their own checks, so only the
	// other keys are checked here; Resolve checks the numbers it finds.
	noise, sample := c.Noise, c.Sample
	if c.Auto.SigmaMax {
		noise.SigmaMax = math.MaxFloat64
	}
	if c.Auto.Levels {
		noise.Levels = 2
	}
	if c.Auto.Eps {
		sample.Eps = 1
	}
	for _, v := range []interface{ Validate() error }{noise, c.Train.AdamConfig, sample} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	if err := c.Model.Validate(shape); err != nil {
		return err
	}
	dim := 1
	for _, d := range shape {
		dim *= d
	}
	if err := c.Train.LossConfig.Validate(c.Model.Arch, dim); err != nil {
		return err
	}
	return nil
}

// Shape is the per-example data shape, known without opening the files:
// [D] for 2-D toys, [C, H, W] for images.
func (c Config) Shape() []int {
	d := c.Data.WithDefaults()
	switch d.Name {
	case data.NameSynthetic:
		return []int{d.Channels, d.ImageSize, d.ImageSize}
	case data.NameMNIST, data.NameFashionMNIST:
		return []int{1, 28, 28}
	case data.NameCIFAR10:
		return []int{3, 32, 32}
	case data.NameGMM:
		if len(d.Means) > 0 {
			return []int{len(d.Means[0])}
		}
	}
	return []int{2}
}

// WorkersFit reports whether w workers can share the global batch.
func (c Config) WorkersFit(w int) error {
	if w < 1 || w > c.Train.GlobalBatch {
		return fmt.Errorf("%d workers cannot share train.global_batch %d (want 1..%d)", w, c.Train.GlobalBatch, c.Train.GlobalBatch)
	}
	return nil
}

// JSON is the config as checkpoints store it.
func (c Config) JSON() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("config: marshal: %v", err)) // plain data: cannot fail
	}
	return b
}

// FromJSON reads a config stored by JSON and validates it.
func FromJSON(b []byte) (Config, error) {
	// Keys added after the config was stored take their defaults.
	var peek struct {
		Data struct {
			Name string `json:"name"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &peek); err != nil {
		return Config{}, fmt.Errorf("config: stored config: %w", err)
	}
	c := Default(peek.Data.Name)
	// The data section omits zero values (they mean "default" there), so it
	// must start from zero, not from the defaults: dequantize=false is omitted.
	c.Data = data.Config{}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("config: stored config: %w", err)
	}
	// A run resolves auto before it stores its config: the numbers are there.
	c.Auto = Auto{}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: stored config: %w", err)
	}
	return c, nil
}

// YAML renders the config as a file Load accepts, keys set to auto as auto.
func (c Config) YAML() []byte {
	var n yaml.Node
	if err := n.Encode(c); err != nil {
		panic(fmt.Sprintf("config: marshal: %v", err)) // plain data: cannot fail
	}
	for _, k := range c.Auto.Keys() {
		section, key, _ := strings.Cut(k, ".")
		if v := lookup(&n, section, key); v != nil {
			*v = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: autoValue}
		}
	}
	b, err := yaml.Marshal(&n)
	if err != nil {
		panic(fmt.Sprintf("config: marshal: %v", err))
	}
	return b
}

func mapping(root *yaml.Node) *yaml.Node {
	switch root.Kind {
	case 0:
		root.Kind = yaml.DocumentNode
		root.Content = []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}
	case yaml.DocumentNode:
	default:
		return nil
	}
	if len(root.Content) == 0 {
		root.Content = []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}
	}
	doc := root.Content[0]
	if doc.Kind == yaml.ScalarNode && doc.Tag == "!!null" {
		*doc = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	if doc.Kind != yaml.MappingNode {
		return nil
	}
	return doc
}

func lookup(m *yaml.Node, path ...string) *yaml.Node {
	for _, k := range path {
		if m == nil || m.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == k {
				next = m.Content[i+1]
			}
		}
		m = next
	}
	return m
}

func set(doc *yaml.Node, kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return errors.New("want key.path=value")
	}
	var val yaml.Node
	if err := yaml.Unmarshal([]byte(v), &val); err != nil {
		return fmt.Errorf("value: %w", err)
	}
	vn := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: ""}
	if len(val.Content) > 0 {
		vn = val.Content[0]
	}
	m := doc
	parts := strings.Split(k, ".")
	for i, p := range parts {
		if m.Kind != yaml.MappingNode {
			return fmt.Errorf("%s is not a section", strings.Join(parts[:i], "."))
		}
		var next *yaml.Node
		for j := 0; j+1 < len(m.Content); j += 2 {
			if m.Content[j].Value == p {
				next = m.Content[j+1]
				if i == len(parts)-1 {
					m.Content[j+1] = vn
				}
			}
		}
		if next == nil {
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			if i == len(parts)-1 {
				next = vn
			}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: p}, next)
		}
		m = next
	}
	return nil
}

// checkKeys rejects keys that t does not have, naming them by their full path.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || n.Kind != yaml.MappingNode {
		return nil
	}
	if t == reflect.TypeOf(Duration(0)) {
		return nil
	}
	fields := map[string]reflect.Type{}
	collect(t, fields)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		p := k
		if path != "" {
			p = path + "." + k
		}
		ft, ok := fields[k]
		if !ok {
			known := make([]string, 0, len(fields))
			for f := range fields {
				known = append(known, f)
			}
			slices.Sort(known)
			return fmt.Errorf("%s: unknown key (known keys here: %s)", p, strings.Join(known, ", "))
		}
		if err := checkKeys(n.Content[i+1], ft, p); err != nil {
			return err
		}
		v := n.Content[i+1]
		// yaml.v3 truncates 2.5 into an int without complaint (1e3 is fine).
		fraction := false
		if f, err := strconv.ParseFloat(v.Value, 64); err == nil && v.Tag == "!!float" && reflect.New(ft).Elem().CanInt() {
			fraction = f != math.Trunc(f)
		}
		if autoKey(p) {
			if fraction || !isAuto(v) && v.Decode(reflect.New(ft).Interface()) != nil {
				return fmt.Errorf("%s: %q, want a number or auto", p, v.Value)
			}
			continue
		}
		if fraction {
			return fmt.Errorf("%s: %s, want a whole number", p, v.Value)
		}
		if !isSection(ft) {
			// Decode leaves one by one so a type error names its key.
			if err := v.Decode(reflect.New(ft).Interface()); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	return nil
}

func isSection(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && t != reflect.TypeOf(Duration(0))
}

func collect(t reflect.Type, fields map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if strings.Contains(opts, "inline") {
			collect(f.Type, fields)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
	}
}
