package clustertest

import (
	"testing"
	"time"

	"github.com/ncsn/ncsn/worker"
)

// --data-root names where a host keeps dataset files; a run on a generated
// set (no files) must still train on a worker given one.
func TestDataRootWithGeneratedData(t *testing.T) {
	var log Log
	rc := Config(t, "run.steps=20")
	c := StartCoordinator(t, rc, t.TempDir(), log.Logger(t), CoordOptions{})
	w := StartWorker(t, c.Addr(), log.Logger(t), WorkerOptions{Tweak: func(cfg *worker.ClusterConfig) { cfg.DataRoot = t.TempDir() }})
	if err := c.Wait(t, time.Minute); err != nil {
		t.Fatalf("coordinator: %v\n%s", err, log.String())
	}
	if err := w.Wait(t, time.Minute); err != nil {
		t.Fatalf("worker with --data-root on %s data: %v", rc.Data.Name, err)
	}
}
