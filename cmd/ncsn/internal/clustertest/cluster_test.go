package clustertest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ncsn/ncsn/coordinator"
	"github.com/ncsn/ncsn/internal/safetensors"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/worker"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(leakOptions...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var leakOptions = []goleak.Option{
	// memberlist's packet handler goroutines end a moment after Shutdown returns.
	goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).packetHandler"),
	goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).streamListen"),
	goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*NetTransport).tcpListen"),
	goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*NetTransport).udpListen"),
	// A probe in flight when a node shuts down waits out its timeout.
	goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
}

// runTimeout bounds each wait for an event; generous because -race on a loaded
// machine runs these clusters many times slower, and a pass never waits it out.
const runTimeout = 2 * time.Minute

// checkSequence fails unless steps are from, from+1, ..., to-1: none applied twice, none skipped.
func checkSequence(t *testing.T, steps []int64, from, to int64) {
	t.Helper()
	if int64(len(steps)) != to-from {
		t.Fatalf("committed %d steps, want %d (%d..%d): %v", len(steps), to-from, from, to-1, steps)
	}
	for i, s := range steps {
		if s != from+int64(i) {
			t.Fatalf("commit %d is step %d, want %d: %v", i, s, from+int64(i), steps)
		}
	}
}

func relDiff(a, b []float32) float64 {
	var d, n float64
	for i := range a {
		x := float64(a[i]) - float64(b[i])
		d += x * x
		n += float64(a[i]) * float64(a[i])
	}
	return math.Sqrt(d / n)
}

// TestEquivalence: the same config with 1 and 3 workers ends with equal parameters (up to
// summation order), 1 worker is bitwise the single-process run, and with 3 workers every
// replica is bitwise the coordinator's state.
func TestEquivalence(t *testing.T) {
	rc := Config(t)
	local, err := worker.NewLocal(worker.LocalConfig{Run: rc, Out: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	if err := local.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	results := map[int][]float32{}
	for _, n := range []int{1, 3} {
		var log Log
		lg := log.Logger(t)
		rcn := rc
		rcn.Cluster.MinWorkers = n
		c := StartCoordinator(t, rcn, t.TempDir(), lg, CoordOptions{})
		ws := make([]*Worker, n)
		for i := range ws {
			ws[i] = StartWorker(t, c.Addr(), lg, WorkerOptions{})
		}
		if err := c.Wait(t, runTimeout); err != nil {
			t.Fatalf("%d workers: coordinator: %v\n%s", n, err, log.String())
		}
		for i, w := range ws {
			if err := w.Wait(t, runTimeout); err != nil {
				t.Fatalf("%d workers: worker %d: %v", n, i, err)
			}
		}
		checkSequence(t, c.Committed(), 0, rc.Run.Steps)
		canon, _ := NewState(t, rc)
		if err := c.Snapshot(canon); err != nil {
			t.Fatal(err)
		}
		ch := canon.Hash()
		for i, w := range ws {
			if w.State().Step() != rc.Run.Steps {
				t.Errorf("%d workers: worker %d at step %d, want %d", n, i, w.State().Step(), rc.Run.Steps)
			}
			if w.State().Hash() != ch {
				t.Errorf("%d workers: worker %d's replica differs from the coordinator's state", n, i)
			}
		}
		results[n] = canon.Params
		if !strings.Contains(log.String(), "members=3") && n == 3 {
			t.Errorf("no view with 3 members logged")
		}
	}
	if h1, hl := hashOf(results[1]), hashOf(local.State().Params); h1 != hl {
		t.Errorf("1 worker differs from the single-process run: rel diff %g", relDiff(local.State().Params, results[1]))
	}
	d := relDiff(results[1], results[3])
	t.Logf("1 vs 3 workers after %d steps: relative parameter difference %.3g", rc.Run.Steps, d)
	if d > 1e-5 {
		t.Errorf("1 vs 3 workers: relative parameter difference %g > 1e-5", d)
	}
}

func hashOf(x []float32) uint64 {
	var h uint64 = 14695981039346656037
	for _, v := range x {
		h ^= uint64(math.Float32bits(v))
		h *= 1099511628211
	}
	return h
}

// TestWorkerLossAndJoin: a worker dies mid-run and the run goes on with 2; a 4th worker
// joins mid-run and is used; no step is applied twice or skipped.
func TestWorkerLossAndJoin(t *testing.T) {
	rc := Config(t, "run.steps=400", "run.checkpoint_every=100", "run.log_every=50", "cluster.min_workers=2")
	var log Log
	lg := log.Logger(t)
	c := StartCoordinator(t, rc, t.TempDir(), lg, CoordOptions{})
	ws := []*Worker{StartWorker(t, c.Addr(), lg, WorkerOptions{}), StartWorker(t, c.Addr(), lg, WorkerOptions{}), StartWorker(t, c.Addr(), lg, WorkerOptions{})}
	// Wait until all three train together.
	for p := c.WaitStep(t, 1, runTimeout); p.Workers < 3; p = c.WaitStep(t, p.Step+1, runTimeout) {
	}
	p := c.WaitStep(t, 30, runTimeout)
	t0 := time.Now()
	ws[1].Kill()
	after := c.WaitStep(t, p.Step+1, runTimeout)
	for after.Workers != 2 {
		after = c.WaitStep(t, after.Step+1, runTimeout)
	}
	t.Logf("kill at step %d → next commit with 2 workers (step %d) after %v", p.Step, after.Step, time.Since(t0))
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("recovery took %v, want < 10s", d)
	}
	ws = append(ws, StartWorker(t, c.Addr(), lg, WorkerOptions{}))
	joined := c.WaitStep(t, after.Step+1, runTimeout)
	for joined.Workers != 3 {
		joined = c.WaitStep(t, joined.Step+1, runTimeout)
	}
	if joined.Step >= rc.Run.Steps {
		t.Fatalf("the 4th worker was not used before the run ended")
	}
	t.Logf("4th worker used from step %d", joined.Step)
	if err := c.Wait(t, runTimeout); err != nil {
		t.Fatal(err)
	}
	checkSequence(t, c.Committed(), 0, rc.Run.Steps)
	canon, _ := NewState(t, rc)
	if err := c.Snapshot(canon); err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		if i == 1 {
			continue
		}
		if err := w.Wait(t, runTimeout); err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		if w.State().Hash() != canon.Hash() {
			t.Errorf("worker %d's replica differs from the coordinator's state", i)
		}
	}
}

// TestCoordinatorRestart: the coordinator dies mid-run and is started again with the same
// folder and addresses; it resumes from the newest checkpoint, the workers re-join, the run
// finishes.
func TestCoordinatorRestart(t *testing.T) {
	rc := Config(t, "run.steps=200", "run.checkpoint_every=20", "cluster.min_workers=2")
	var log Log
	lg := log.Logger(t)
	out := t.TempDir()
	c := StartCoordinator(t, rc, out, lg, CoordOptions{})
	addr, gossip := c.Addr(), c.GossipAddr()
	ws := []*Worker{StartWorker(t, addr, lg, WorkerOptions{}), StartWorker(t, addr, lg, WorkerOptions{})}
	p := c.WaitStep(t, 50, runTimeout)
	c.Stop()
	stopped := c.Committed()
	last := stopped[len(stopped)-1] + 1
	t.Logf("coordinator stopped after step %d (commit seen at %d)", last, p.Step)
	c2 := StartCoordinator(t, rc, out, lg, CoordOptions{Listen: addr, Gossip: gossip})
	if err := c2.Wait(t, runTimeout); err != nil {
		t.Fatal(err)
	}
	steps := c2.Committed()
	from := steps[0]
	// A crash loses the checkpoints still queued for the disk: one being written, one waiting.
	if from%rc.Run.CheckpointEvery != 0 || from > last || from < last-2*rc.Run.CheckpointEvery {
		t.Errorf("resumed at step %d; the newest checkpoint before the crash at %d is %d", from, last, last/rc.Run.CheckpointEvery*rc.Run.CheckpointEvery)
	}
	checkSequence(t, steps, from, rc.Run.Steps)
	canon, _ := NewState(t, rc)
	if err := c2.Snapshot(canon); err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		if err := w.Wait(t, runTimeout); err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		if w.State().Hash() != canon.Hash() {
			t.Errorf("worker %d's replica differs from the coordinator's state", i)
		}
	}
}

// TestJoinRefused: a wrong version, run id or secret is refused, with the reason on both sides.
func TestJoinRefused(t *testing.T) {
	rc := Config(t)
	for _, tc := range []struct {
		name        string
		o           WorkerOptions
		worker      string // in the worker's error
		coordinator string // in the coordinator's log
	}{
		{"version", WorkerOptions{Version: "other"}, `version mismatch: worker is "other", coordinator is "test"`, "refused join: version"},
		{"run", WorkerOptions{RunID: "another-run"}, `wrong run: worker asks for run "another-run", this coordinator runs "ncsn"`, "refused join: run id"},
		{"secret", WorkerOptions{Secret: []byte("not the secret")}, "wrong cluster secret", "refused unauthenticated call"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log Log
			lg := log.Logger(t)
			c := StartCoordinator(t, rc, t.TempDir(), lg, CoordOptions{})
			w := StartWorker(t, c.Addr(), lg, tc.o)
			err := w.Wait(t, runTimeout)
			if err == nil || !strings.Contains(err.Error(), tc.worker) {
				t.Errorf("worker error %v, want one containing %q", err, tc.worker)
			}
			if !strings.Contains(log.String(), tc.coordinator) {
				t.Errorf("coordinator log lacks %q", tc.coordinator)
			}
		})
	}
}

// TestCheckpointFaults: a failure at any stage of writing the final checkpoint fails the
// run, leaves the newest loadable checkpoint intact, and a restarted coordinator resumes
// from it and finishes.
func TestCheckpointFaults(t *testing.T) {
	rc := Config(t, "run.steps=20", "run.checkpoint_every=5", "run.keep=2")
	for _, stage := range safetensors.Stages {
		t.Run(stage.String(), func(t *testing.T) {
			var log Log
			lg := log.Logger(t)
			out := t.TempDir()
			var mu sync.Mutex
			writes := 0
			c := StartCoordinator(t, rc, out, lg, CoordOptions{Tweak: func(cfg *coordinator.Config) {
				cfg.CheckpointWriter.FaultHook = func(s safetensors.Stage) error {
					mu.Lock()
					defer mu.Unlock()
					if s == safetensors.StageCreated {
						writes++
					}
					if writes == 4 && s == stage { // the final checkpoint, of step 20
						return errors.New("injected fault")
					}
					return nil
				}
			}})
			w := StartWorker(t, c.Addr(), lg, WorkerOptions{})
			if err := c.Wait(t, runTimeout); err == nil || !strings.Contains(err.Error(), "injected fault") {
				t.Fatalf("coordinator: %v, want the injected fault", err)
			}
			st, net := NewState(t, rc)
			dir := &model.CheckpointDir{Dir: filepath.Join(out, "checkpoints"), Keep: rc.Run.Keep}
			ck, path, err := dir.Latest(net.Params())
			if err != nil {
				t.Fatalf("no loadable checkpoint after a fault at %v: %v", stage, err)
			}
			want := int64(15)
			if stage == safetensors.StageRenamed {
				want = 20 // complete on disk; only the folder fsync failed
			}
			if ck.Step != want {
				t.Errorf("newest loadable checkpoint %s is step %d, want %d", path, ck.Step, want)
			}
			if err := ck.Restore(st); err != nil {
				t.Fatal(err)
			}
			c2 := StartCoordinator(t, rc, out, lg, CoordOptions{Listen: c.Addr()})
			if err := c2.Wait(t, runTimeout); err != nil {
				t.Fatal(err)
			}
			if stage == safetensors.StageRenamed {
				// The restarted coordinator found the run complete and did not wait for
				// the worker, which would re-join until its timeout.
				w.Kill()
			} else if err := w.Wait(t, runTimeout); err != nil {
				t.Fatalf("worker: %v", err)
			}
			if ck, _, err := dir.Latest(net.Params()); err != nil || ck.Step != rc.Run.Steps {
				t.Fatalf("after the restart: newest checkpoint %v, err %v; want step %d", ck, err, rc.Run.Steps)
			}
		})
	}
}
