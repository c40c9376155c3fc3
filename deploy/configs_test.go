// Package deploy_test checks the run configs that the deployment files mount (compose, the
// netns test, the Kubernetes ConfigMap): each must load as ncsn's coordinator loads it, and
// the scripts' assumptions about them must hold. The files themselves are not Go; this test
// lives in the main module so that `make test` catches a config key renamed under them.
package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/ncsn/ncsn/model/config"
)

func TestRunConfigsLoad(t *testing.T) {
	for _, f := range []string{"compose/run.yaml", "compose/e2e.yaml", "netns/netns.yaml", "k8s/run.yaml"} {
		c, err := config.Load(f, nil)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if c.Cluster.MinWorkers < 2 {
			// With one worker left a deployment still "trains", but then a lost worker is
			// no longer a test of the ring going on without it.
			t.Errorf("%s: cluster.min_workers %d, want at least 2", f, c.Cluster.MinWorkers)
		}
		if c.Data.Name != "fashion-mnist" {
			// The workers are started with --data-root, which only file datasets accept.
			t.Errorf("%s: data.name %q: the deploy files mount a dataset folder for fashion-mnist", f, c.Data.Name)
		}
	}
}

// e2e.sh waits for the final checkpoint by its step number and must restart the coordinator
// while the run still has steps to go: its constant has to agree with e2e.yaml.
func TestE2EStepsMatchConfig(t *testing.T) {
	c, err := config.Load("compose/e2e.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("compose", "e2e.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^steps=(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("e2e.sh: no steps=N line")
	}
	if n, _ := strconv.ParseInt(string(m[1]), 10, 64); n != c.Run.Steps {
		t.Errorf("e2e.sh steps=%d, e2e.yaml run.steps=%d", n, c.Run.Steps)
	}
	if c.Run.Steps/c.Run.CheckpointEvery < 10 {
		t.Errorf("e2e.yaml: %d steps, a checkpoint every %d: too few checkpoints to resume from mid-run", c.Run.Steps, c.Run.CheckpointEvery)
	}
}
