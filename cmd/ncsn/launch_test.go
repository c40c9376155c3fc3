package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The test binary stands in for ncsn when launch re-executes itself.
func TestMain(m *testing.M) {
	if os.Getenv("NCSN_TEST_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// ncsn launch: a coordinator and 2 worker processes, progress, checkpoints,
// loss curve and samples, exit 0.
func TestLaunch(t *testing.T) {
	t.Setenv("NCSN_TEST_AS_MAIN", "1")
	dir := t.TempDir()
	// --metrics serves the run's metrics while it trains.
	maddr, scraped := watchMetrics(t, "ncsn_coordinator_committed_steps_total")
	out, errs, code := ncsn(t, "launch", "--workers", "2", "--out", dir, "--metrics", maddr, "--set", "data.name=gmm", "--set", "run.steps=300",
		"--set", "run.checkpoint_every=100", "--set", "run.samples=100", "--set", "sample.steps_per_level=5",
		"--set", "run.sample_every=100", "--set", "run.snapshot_samples=50")
	if code != 0 {
		t.Fatalf("launch exited %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if scraped() == "" {
		t.Error("launch --metrics: the coordinator's metrics were never served")
	}
	for _, want := range []string{"checkpoints: ", "loss curve: ", "samples: "} {
		if !strings.Contains(out, want) {
			t.Errorf("launch output lacks %q:\n%s", want, out)
		}
	}
	for _, f := range []string{"checkpoints/ckpt-300.safetensors", "loss.csv", "loss.png", "samples.csv", "samples.png",
		"logs/coordinator.log", "logs/worker-0.log", "logs/worker-1.log", "config.yaml",
		// The coordinator snapshots the committed EMA weights; the first offer is never skipped.
		"snapshots/snapshots.csv", "snapshots/step-000100.csv"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("launch left no %s: %v", f, err)
		}
	}
}

// A run that cannot start says why and exits non-zero.
func TestLaunchFailure(t *testing.T) {
	t.Setenv("NCSN_TEST_AS_MAIN", "1")
	dir := t.TempDir()
	_, errs, code := ncsn(t, "launch", "--workers", "2", "--out", dir, "--set", "data.name=mnist", "--set", "data.path="+filepath.Join(dir, "no-mnist"))
	if code == 0 {
		t.Fatal("launch on missing data exited 0")
	}
	b, _ := os.ReadFile(filepath.Join(dir, "logs", "coordinator.log"))
	if !strings.Contains(errs+string(b), "no-mnist") {
		t.Fatalf("neither the launcher nor the coordinator's log names the missing path:\n%s\n%s", errs, b)
	}
}

// A worker that cannot reach its coordinator says so and exits non-zero within its timeout.
func TestWorkerCannotJoin(t *testing.T) {
	start := time.Now()
	_, errs, code := ncsn(t, "worker", "--join", "127.0.0.1:1", "--join-timeout", "2s", "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errs, "127.0.0.1:1") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("took %v to give up with a 2s join timeout", d)
	}
}

// watchMetrics picks a free address for --metrics and polls it (there is no event to wait
// on in another server) until it serves metric; scraped stops the polling and tells
// whether it did.
func watchMetrics(t *testing.T, metric string) (addr string, scraped func() string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = lis.Addr().String()
	lis.Close()
	seen := make(chan string, 1)
	stop := make(chan struct{})
	go func() {
		defer close(seen)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if r, err := http.Get("http://" + addr + "/metrics"); err == nil {
				b, _ := io.ReadAll(r.Body)
				r.Body.Close()
				if strings.Contains(string(b), metric) {
					seen <- string(b)
					return
				}
			}
		}
	}()
	return addr, func() string { close(stop); return <-seen }
}
