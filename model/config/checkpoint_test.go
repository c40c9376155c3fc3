package config

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCheckpointRun: a run recognises its checkpoints by its config, also one stored
// before a key was added (the key takes its default), and refuses another run's.
func TestCheckpointRun(t *testing.T) {
	rc, err := Load("", []string{"data.name=gmm"})
	if err != nil {
		t.Fatal(err)
	}
	run := rc.CheckpointRun()
	if run.Seed != rc.Run.Seed || run.Batch != rc.Train.GlobalBatch || string(run.Config) != string(rc.JSON()) {
		t.Fatalf("CheckpointRun = %+v", run)
	}
	var older map[string]map[string]any
	if err := json.Unmarshal(rc.JSON(), &older); err != nil {
		t.Fatal(err)
	}
	if _, ok := older["cluster"]["hash_every"]; !ok {
		t.Fatal("no cluster.hash_every in the stored config")
	}
	delete(older["cluster"], "hash_every") // as if stored before cluster.hash_every existed
	olderJSON, _ := json.Marshal(older)
	other, err := Load("", []string{"data.name=gmm", "run.seed=99"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, stored, err string
	}{
		{"same", string(rc.JSON()), ""},
		{"stored before a key was added", string(olderJSON), ""},
		{"another seed", string(other.JSON()), "its config differs"},
		{"not a config", `{"nope":1}`, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run.SameRun([]byte(tc.stored))
			if tc.err == "" && err != nil {
				t.Fatal(err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want one containing %q", err, tc.err)
			}
		})
	}
}
