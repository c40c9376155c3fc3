package clustertest

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ncsn/ncsn/coordinator"
)

// Training the toy mixture with int8 or int4 gradients and error feedback ends
// within 2% of the loss of uncompressed gradients: same seed, same steps, 3 workers.
func TestErrorFeedbackConvergence(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three times: not in -short")
	}
	const steps, tail = 600, 200
	codecs := []string{"none", "int8", "int4"}
	final, first := map[string]float64{}, map[string]float64{}
	for _, codec := range codecs {
		rc := Config(t, "run.steps=600", "run.checkpoint_every=600", "train.global_batch=192",
			"allreduce.codec="+codec, "allreduce.compressor=zstd", "cluster.min_workers=3")
		var log Log
		lg := log.Logger(t)
		reg := prometheus.NewRegistry()
		c := StartCoordinator(t, rc, t.TempDir(), lg, CoordOptions{Tweak: func(cfg *coordinator.Config) { cfg.Registerer = reg }})
		ws := make([]*Worker, 3)
		for i := range ws {
			ws[i] = StartWorker(t, c.Addr(), lg, WorkerOptions{})
		}
		// The loss of the last steps, whose batches and noise are the same in
		// both runs: only the parameters differ.
		first[codec] = c.WaitStep(t, 1, 2*time.Minute).Loss
		var sum float64
		for s := int64(steps - tail + 1); s <= steps; s++ {
			sum += c.WaitStep(t, s, 2*time.Minute).Loss
		}
		if err := c.Wait(t, time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", codec, err, log.String())
		}
		for _, w := range ws {
			w.Wait(t, time.Minute)
		}
		final[codec] = sum / tail
		// The commits carried the sum as the ring encoded it, and it decoded at the
		// coordinator to exactly what the workers applied.
		canon, _ := NewState(t, rc)
		if err := c.Snapshot(canon); err != nil {
			t.Fatal(err)
		}
		for i, w := range ws {
			if w.State().Hash() != canon.Hash() {
				t.Errorf("%s: worker %d's replica differs from the coordinator's state", codec, i)
			}
		}
		if n := counter(t, reg, "ncsn_coordinator_hash_mismatches_total"); n != 0 {
			t.Errorf("%s: %v hash mismatches", codec, n)
		}
		perStep := counter(t, reg, "ncsn_coordinator_commit_gradient_bytes_total") / steps
		raw := float64(4 * len(canon.Params))
		t.Logf("%s+zstd: %.0f commit bytes per step, raw float32 %.0f (%.2f×)", codec, perStep, raw, raw/perStep)
		if want := map[string]float64{"none": 1, "int8": 3.5, "int4": 6}[codec]; raw/perStep < want {
			t.Errorf("%s: commits of %.0f bytes per step for %.0f raw, want ≥ %.1f× smaller", codec, perStep, raw, want)
		}
	}
	for _, codec := range codecs[1:] {
		// The first step's loss comes from the same initial parameters in every
		// run: equal bits show the loss statistics travel exactly, whatever the codec.
		if first[codec] != first["none"] {
			t.Errorf("step 1 loss: %s %v, none %v: the loss statistics were quantised", codec, first[codec], first["none"])
		}
		d := (final[codec] - final["none"]) / final["none"]
		t.Logf("mean loss of the last %d of %d steps: none %.5f, %s+zstd with error feedback %.5f (%+.2f%%)", tail, steps, final["none"], codec, final[codec], 100*d)
		if d == 0 {
			t.Errorf("%s and none give bitwise the same losses: the codec was not used", codec)
		}
		if math.Abs(d) > 0.02 {
			t.Errorf("%s ends %.2f%% away from none, want within 2%%", codec, 100*d)
		}
	}
}

// counter reads a counter from reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}
