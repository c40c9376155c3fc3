package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const toy = `
run:   {seed: 1, steps: 2000, checkpoint_every: 500, keep: 3}
data:  {name: gmm, means: [[-5,-5],[5,5]], weights: [0.2,0.8], std: 1.0}
model: {arch: mlp}
noise: {sigma_max: 20, sigma_min: 0.1, levels: 10}
train: {global_batch: 256, lr: 1e-3, ema: 0.999}
sample: {steps_per_level: 100, eps: 2e-5, denoise: true}
allreduce: {codec: int8, compressor: zstd}
`

func TestDesignExampleLoads(t *testing.T) {
	c, err := Load(write(t, toy), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Data.Name != "gmm" || c.Model.Arch != "mlp" || c.Train.GlobalBatch != 256 || c.AllReduce.Codec != "int8" ||
		c.Sample.Eps != 2e-5 || c.Train.Beta2 != 0.999 || c.Run.LogEvery != 20 {
		t.Fatalf("loaded %+v", c)
	}
}

func TestEmbeddedDefault(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Data.Name != "synthetic" || c.Model.Arch != "unet" {
		t.Fatalf("default is %s/%s", c.Data.Name, c.Model.Arch)
	}
}

func TestSetOverrides(t *testing.T) {
	c, err := Load(write(t, toy), []string{"train.lr=5e-4", "data.weights=[0.5,0.5]", "sample.denoise=false", "allreduce.timeout=3s", "run.id=exp-2"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Train.LR != 5e-4 || c.Data.Weights[0] != 0.5 || c.Sample.Denoise || c.AllReduce.Timeout.String() != "3s" || c.Run.ID != "exp-2" {
		t.Fatalf("overrides not applied: %+v", c)
	}
	// Overrides without a file pick the dataset's defaults.
	c, err = Load("", []string{"data.name=moons"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Model.Arch != "mlp" || c.Noise.SigmaMax != 20 {
		t.Fatalf("moons defaults: %+v", c)
	}
	// Overriding one key of a dataset keeps its other defaults.
	c, err = Load("", []string{"data.name=gmm", "data.weights=[0.5,0.5]"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Data.Means) != 2 || c.Data.Means[1][0] != 5 || c.Data.Weights[1] != 0.5 {
		t.Fatalf("gmm with new weights: means %v weights %v", c.Data.Means, c.Data.Weights)
	}
}

func TestRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		sets []string
		want string
	}{
		{"unknown section", toy + "extra: {a: 1}\n", nil, "extra: unknown key"},
		{"unknown nested key", strings.Replace(toy, "lr: 1e-3", "lrr: 1e-3", 1), nil, "train.lrr: unknown key"},
		{"unknown set key", toy, []string{"noise.sigma=3"}, "noise.sigma: unknown key"},
		{"negative steps", toy, []string{"run.steps=-5"}, "run.steps"},
		{"sigma order", toy, []string{"noise.sigma_min=30"}, "noise.sigma_min"},
		{"weights sum", toy, []string{"data.weights=[0.3,0.3]"}, "data.weights"},
		{"batch below workers", toy, []string{"cluster.min_workers=300"}, "cluster.min_workers"},
		{"codec", toy, []string{"allreduce.codec=fp8"}, "allreduce.codec"},
		{"bad duration", toy, []string{"allreduce.timeout=soon"}, "duration"},
		{"bad set syntax", toy, []string{"train.lr"}, "key.path=value"},
		{"wrong type", toy, []string{"run.steps=many"}, "run"},
		{"not a mapping", "- a\n- b\n", nil, "mapping"},
		{"unknown dataset", toy, []string{"data.name=imagenet"}, "data.name"},
		{"arch for images", "model: {arch: mlp}\n", nil, "model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(write(t, tc.file), tc.sets)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	c, err := Load(write(t, toy), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := FromJSON(c.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if string(d.JSON()) != string(c.JSON()) {
		t.Fatalf("round trip changed the config:\n%s\n%s", c.JSON(), d.JSON())
	}
	// A stored false that the data section omits stays false.
	m, err := Load("", []string{"data.name=mnist", "data.dequantize=false", "data.path=/nonexistent",
		"noise.sigma_max=1", "noise.levels=10", "sample.eps=2e-5"})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := FromJSON(m.JSON()); err != nil || d.Data.Dequantize {
		t.Fatalf("dequantize=false came back as %v (err %v)", d.Data.Dequantize, err)
	}
	// Keys added after a config was stored take their defaults.
	var raw map[string]any
	json.Unmarshal(c.JSON(), &raw)
	delete(raw["run"].(map[string]any), "log_every")
	old, _ := json.Marshal(raw)
	if d, err := FromJSON(old); err != nil || d.Run.LogEvery != Default("gmm").Run.LogEvery {
		t.Fatalf("missing key: %+v, %v", d.Run, err)
	}
	// YAML output is a valid input.
	e, err := Load(write(t, string(c.YAML())), nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(e.JSON()) != string(c.JSON()) {
		t.Fatalf("YAML round trip changed the config")
	}
}
