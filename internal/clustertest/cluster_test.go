package clustertest

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ncsn/ncsn/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// memberlist's packet handler goroutines end a moment after Shutdown returns.
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).packetHandler"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).streamListen"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*NetTransport).tcpListen"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*NetTransport).udpListen"),
	)
}

const runTimeout = 40 * time.Second

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
