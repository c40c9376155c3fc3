package config

import (
	"strings"
	"testing"
)

// TestCheckpointRun: a run's checkpoints record its config, seed and batch, and it
// resumes from a checkpoint whose config differs only in free keys, not in identity.
func TestCheckpointRun(t *testing.T) {
	rc, err := Load("", []string{"data.name=gmm"})
	if err != nil {
		t.Fatal(err)
	}
	run := rc.CheckpointRun()
	if run.Seed != rc.Run.Seed || run.Batch != rc.Train.GlobalBatch || string(run.Config) != string(rc.JSON()) {
		t.Fatalf("CheckpointRun = %+v", run)
	}
	for _, tc := range []struct {
		name string
		set  string // the stored run's difference
		err  string
	}{
		{"same", "", ""},
		{"free key", "run.steps=99", ""},
		{"identity key", "run.seed=99", "run.seed: 99 → 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sets := []string{"data.name=gmm"}
			if tc.set != "" {
				sets = append(sets, tc.set)
			}
			stored, err := Load("", sets)
			if err != nil {
				t.Fatal(err)
			}
			err = run.SameRun(stored.JSON())
			if tc.err == "" && err != nil {
				t.Fatal(err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want one containing %q", err, tc.err)
			}
		})
	}
}
