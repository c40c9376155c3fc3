package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ncsn/ncsn/cmd/ncsn/internal/clustertest"
	"github.com/ncsn/ncsn/coordinator"
	"github.com/ncsn/ncsn/worker"
)

// scrape serves reg with serveMetrics on a free port, as --metrics does, and
// parses what a Prometheus server would read.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]bool {
	t.Helper()
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait, err := serveMetrics(ctx, "127.0.0.1:0", reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer wait()
	m := regexp.MustCompile(`addr=(http://\S+/metrics)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no metrics address logged: %s", logs.String())
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the Prometheus text parser rejects /metrics: %v", err)
	}
	names := map[string]bool{}
	for n := range fams {
		names[n] = true
	}
	return names
}

func TestMetricsEndpoint(t *testing.T) {
	var log clustertest.Log
	creg, wreg := prometheus.NewRegistry(), prometheus.NewRegistry()
	rc := clustertest.Config(t, "run.steps=1000000", "run.checkpoint_every=1000000")
	c := clustertest.StartCoordinator(t, rc, t.TempDir(), log.Logger(t), clustertest.CoordOptions{
		Tweak: func(cfg *coordinator.Config) { cfg.Registerer = creg },
	})
	clustertest.StartWorker(t, c.Addr(), log.Logger(t), clustertest.WorkerOptions{
		Tweak: func(cfg *worker.ClusterConfig) { cfg.Registerer = wreg },
	})
	c.WaitStep(t, 5, time.Minute)

	got := scrape(t, creg)
	for _, want := range []string{
		"ncsn_coordinator_committed_steps_total", "ncsn_coordinator_loss", "ncsn_coordinator_loss_per_level",
		"ncsn_coordinator_samples_per_second", "ncsn_coordinator_ring_epoch", "ncsn_coordinator_ring_members",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !got[want] {
			t.Errorf("coordinator /metrics lacks %s", want)
		}
	}
	got = scrape(t, wreg)
	for _, want := range []string{"ncsn_allreduce_seconds", "ncsn_allreduce_wire_sent_bytes_total", "ncsn_worker_steps_total"} {
		if !got[want] {
			t.Errorf("worker /metrics lacks %s", want)
		}
	}
}
