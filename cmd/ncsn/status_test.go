package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ncsn/ncsn/cmd/ncsn/internal/clustertest"
)

// ncsn status against a real coordinator over gRPC: waiting for workers,
// then training with one.
func TestStatusCommand(t *testing.T) {
	t.Setenv("NCSN_SECRET", string(clustertest.Secret))
	var log clustertest.Log
	rc := clustertest.Config(t, "run.steps=1000000", "run.checkpoint_every=1000000")
	c := clustertest.StartCoordinator(t, rc, t.TempDir(), log.Logger(t), clustertest.CoordOptions{})

	out, errs, code := ncsn(t, "status", "--coordinator", c.Addr())
	if code != 0 || !strings.Contains(out, "waiting for workers") || !strings.Contains(out, "step 0 of 1000000") {
		t.Fatalf("status exited %d: %s%s", code, out, errs)
	}
	clustertest.StartWorker(t, c.Addr(), log.Logger(t), clustertest.WorkerOptions{})
	c.WaitStep(t, 5, time.Minute)
	out, errs, code = ncsn(t, "status", "--coordinator", c.Addr(), "--json")
	if code != 0 {
		t.Fatalf("status --json exited %d: %s", code, errs)
	}
	var r struct {
		RunID string `json:"run_id"`
		Step  int64  `json:"step"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Step < 5 || r.RunID != rc.Run.ID {
		t.Fatalf("status json %q: %+v %v", out, r, err)
	}

	// The wrong secret is refused and said so.
	t.Setenv("NCSN_SECRET", "wrong")
	if _, errs, code := ncsn(t, "status", "--coordinator", c.Addr(), "--timeout", "2s"); code != 1 || !strings.Contains(errs, "did not answer") {
		t.Fatalf("wrong secret: exit %d, %s", code, errs)
	}
}
