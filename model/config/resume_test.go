package config

import (
	"strings"
	"testing"
)

func TestSameRun(t *testing.T) {
	base, err := Load("", []string{"data.name=gmm"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sets []string
		want []string // identity changes named, old → new; none: resumable
	}{
		{nil, nil},
		// Free keys: training longer, lower lr, other cadences, codec, cluster.
		{[]string{"run.steps=9000", "train.lr=1e-4", "run.checkpoint_every=7", "run.log_every=3", "train.ema=0.99",
			"allreduce.codec=int8", "cluster.min_workers=3", "run.samples=5"}, nil},
		{[]string{"model.hidden=64"}, []string{"model.hidden: 128 → 64"}},
		{[]string{"run.seed=2", "noise.levels=5"}, []string{"noise.levels: 10 → 5", "run.seed: 1 → 2"}},
		{[]string{"data.std=2"}, []string{"data.std: 1 → 2"}},
	} {
		c, err := Load("", append([]string{"data.name=gmm"}, tc.sets...))
		if err != nil {
			t.Fatal(err)
		}
		err = c.SameRun(base.JSON())
		if (err == nil) != (tc.want == nil) {
			t.Errorf("%v: SameRun = %v", tc.sets, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v does not name %q", tc.sets, err, w)
			}
		}
	}
	c, _ := Load("", []string{"data.name=gmm", "train.lr=1e-4"})
	if got := c.Changes(base, false); len(got) != 1 || got[0] != "train.lr: 0.001 → 0.0001" {
		t.Errorf("free changes: %q", got)
	}
}
