package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/ncsn/ncsn/coordinator"
)

// TestProcessSoak: SIGKILL of random worker processes, and of the coordinator, again and
// again through a run; each dead worker is replaced and the coordinator restarted on its
// folder and addresses. The run completes, and its final parameters equal those of a
// fault-free single-process run of the same config up to summation order.
func TestProcessSoak(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, ref := t.TempDir(), t.TempDir()
	cfg, rc := writeConfig(t, out, "run.steps=1200", "run.checkpoint_every=50", "run.log_every=50",
		"train.global_batch=96", "cluster.min_workers=2")

	// The fault-free run, in one process.
	train := startProc(t, "train", "train", "--config", cfg, "--out", ref)
	if err := train.wait(t, ctx); err != nil {
		t.Fatalf("train: %v", err)
	}
	want := lastCheckpoint(t, rc, ref)
	if want.Step != rc.Run.Steps {
		t.Fatalf("the fault-free run ended at step %d", want.Step)
	}

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("soak seed %d", seed)
	addrFile := filepath.Join(out, "coordinator.addr")
	startCoord := func(name, listen, gossip string) *proc {
		return startProc(t, name, "coordinator", "--config", cfg, "--listen", listen, "--gossip", gossip,
			"--out", out, "--addr-file", addrFile, "--log-level", "debug")
	}
	coord := startCoord("coordinator", "127.0.0.1:0", "127.0.0.1:0")
	var addrs coordinator.Addrs
	for {
		a, err := coordinator.ReadAddrFile(addrFile)
		if err == nil {
			addrs = a
			break
		}
		select {
		case <-coord.done:
			t.Fatalf("coordinator exited before writing its address: %v", coord.err)
		case <-ctx.Done():
			t.Fatal("no address file")
		case <-time.After(20 * time.Millisecond):
		}
	}
	nw := 0
	startWorker := func() *proc {
		nw++
		return startProc(t, fmt.Sprintf("worker-%d", nw), "worker", "--join", addrs.GRPC, "--listen", "127.0.0.1:0")
	}
	ws := []*proc{startWorker(), startWorker(), startWorker()}

	// waitStep waits for the coordinator to commit step at least s.
	waitStep := func(s int64) int64 {
		for {
			m := coord.waitLine(t, ctx, commitRE)
			if step := atoi(t, m[1]); step >= s {
				return step
			}
		}
	}
	const workerKills, coordKills = 8, 2
	var step int64
	for k := 0; k < workerKills+coordKills; k++ {
		step = waitStep(step + 40 + rng.Int64N(60))
		if k%5 == 4 { // kills 5 and 10: the coordinator
			coord.kill9(t)
			t.Logf("kill -9 coordinator after step %d", step)
			coord = startCoord(fmt.Sprintf("coordinator-%d", k), addrs.GRPC, addrs.Gossip)
			r := coord.waitLine(t, ctx, resumedRE)
			step = atoi(t, r[1])
			continue
		}
		i := rng.IntN(len(ws))
		ws[i].kill9(t)
		t.Logf("kill -9 %s after step %d", ws[i].name, step)
		ws[i] = startWorker()
	}
	done := coord.waitLine(t, ctx, completeRE)
	t.Logf("run complete: %s commits by the last coordinator from step %s", done[1], done[2])
	if err := coord.wait(t, ctx); err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	got := lastCheckpoint(t, rc, out)
	if got.Step != rc.Run.Steps {
		t.Fatalf("final checkpoint at step %d, want %d", got.Step, rc.Run.Steps)
	}
	d := relDiff(want.Layout.Data, got.Layout.Data)
	t.Logf("after %d worker and %d coordinator kills: relative parameter difference to the fault-free run %.3g", workerKills, coordKills, d)
	if d > 1e-5 {
		t.Errorf("relative parameter difference %g > 1e-5", d)
	}
}
