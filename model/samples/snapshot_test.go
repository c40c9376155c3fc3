package samples

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// tinyRun is a resolved config of 8×8 images and a narrow U-Net, quick to sample.
func tinyRun(t *testing.T, sets ...string) config.Config {
	t.Helper()
	rc, err := config.Load("", append([]string{"data.image_size=8", "model.channels=[8,8,8]",
		"noise.sigma_max=1", "noise.levels=3", "sample.steps_per_level=2", "sample.eps=1e-4",
		"run.sample_every=2", "run.snapshot_samples=4"}, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func weights(t *testing.T, rc config.Config) []float32 {
	t.Helper()
	net, err := model.New(rc.Model, rc.Shape())
	if err != nil {
		t.Fatal(err)
	}
	net.Init(rc.Run.Seed)
	return net.Params().Data
}

// gate is a scorer that holds a snapshot in progress until released.
type gate struct {
	entered, release chan struct{}
}

func (g *gate) Names() []string { return []string{"mean"} }

func (g *gate) Score(ctx context.Context, x []float32, n int) ([]float64, error) {
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return []float64{s / float64(len(x))}, nil
}

// An offer while a snapshot is in progress is skipped and counted; the
// snapshot draws from its own copy of the weights; Close waits for it.
func TestSnapshotSkipsWhenBusy(t *testing.T) {
	rc := tinyRun(t)
	dir := filepath.Join(t.TempDir(), "snapshots")
	reg := prometheus.NewRegistry()
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	s, err := NewSnapshotter(SnapshotConfig{Run: rc, Dir: dir, Registerer: reg, Scorer: g})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()

	w := weights(t, rc)
	orig := append([]float32(nil), w...)
	if s.Offer(1, w) {
		t.Fatal("step 1 taken with run.sample_every 2")
	}
	if s.Offer(rc.Run.Steps, w) {
		t.Fatal("the last step taken: the run's final samples show it")
	}
	if !s.Offer(2, w) {
		t.Fatal("step 2 not taken")
	}
	clear(w) // the snapshot must have copied them
	<-g.entered
	for _, step := range []int64{3, 4, 6} {
		if s.Offer(step, w) {
			t.Fatalf("step %d taken while step 2 is drawing", step)
		}
	}
	close(g.release)
	for s.busy.Load() {
		time.Sleep(time.Millisecond)
	}
	if !s.Offer(8, orig) {
		t.Fatal("step 8 not taken after the previous snapshot finished")
	}
	<-g.entered
	s.Close()
	s.Close()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s.Offer(10, orig) {
		t.Fatal("offer taken after Close")
	}

	want, err := Draw(context.Background(), rc, orig, Options{N: 4, Seed: rc.Run.Seed, Sample: rc.Sample})
	if err != nil {
		t.Fatal(err)
	}
	var mean float64
	for _, v := range want {
		mean += float64(v)
	}
	mean /= float64(len(want))
	b, err := os.ReadFile(filepath.Join(dir, "snapshots.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || lines[0] != "step,seconds,skipped,mean" {
		t.Fatalf("snapshots.csv:\n%s", b)
	}
	for i, row := range []struct{ step, skipped string }{{"2", "2"}, {"8", "0"}} {
		f := strings.Split(lines[i+1], ",")
		if len(f) != 4 || f[0] != row.step || f[2] != row.skipped {
			t.Fatalf("row %q, want step %s with %s skipped", lines[i+1], row.step, row.skipped)
		}
		if v, err := strconv.ParseFloat(f[3], 64); err != nil || math.Abs(v-mean) > 1e-5*math.Abs(mean) {
			t.Fatalf("row %q: score %s, want the mean %.6g of samples drawn from the offered weights", lines[i+1], f[3], mean)
		}
		if _, err := os.Stat(filepath.Join(dir, "step-00000"+row.step+".png")); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(s.m.skipped); got != 2 {
		t.Errorf("skipped_total %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.m.snapshots); got != 2 {
		t.Errorf("snapshot_total %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.m.score.WithLabelValues("mean")); math.Abs(got-mean) > 1e-9 {
		t.Errorf("score gauge %v, want %v", got, mean)
	}
	if n, err := testutil.GatherAndCount(reg, "ncsn_snapshot_total", "ncsn_snapshot_skipped_total", "ncsn_snapshot_seconds", "ncsn_snapshot_score"); err != nil || n != 4 {
		t.Errorf("registered metrics: %d, %v", n, err)
	}
}

// A cancelled context stops the snapshot in progress and Run.
func TestSnapshotCancel(t *testing.T) {
	rc := tinyRun(t)
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	s, err := NewSnapshotter(SnapshotConfig{Run: rc, Dir: t.TempDir(), Scorer: g})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	s.Offer(2, weights(t, rc))
	<-g.entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	if got := testutil.ToFloat64(s.m.failures); got != 0 {
		t.Errorf("failures %v: an abandoned snapshot is not a failure", got)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.Dir, "snapshots.csv")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an abandoned snapshot left a row: %v", err)
	}
}

type names []string

func (n names) Names() []string { return n }
func (n names) Score(context.Context, []float32, int) ([]float64, error) {
	return make([]float64, len(n)), nil
}

func TestNewSnapshotterRejects(t *testing.T) {
	auto, err := config.Load("", []string{"data.image_size=8"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  SnapshotConfig
		want string
	}{
		{"unresolved", SnapshotConfig{Run: auto, Dir: t.TempDir()}, "auto has not been resolved"},
		{"off", SnapshotConfig{Run: tinyRun(t, "run.sample_every=0"), Dir: t.TempDir()}, "run.sample_every is 0"},
		{"no folder", SnapshotConfig{Run: tinyRun(t)}, "no folder"},
		{"scorer names", SnapshotConfig{Run: tinyRun(t), Dir: t.TempDir(), Scorer: names{"fid", "fid"}}, "distinct"},
		{"empty name", SnapshotConfig{Run: tinyRun(t), Dir: t.TempDir(), Scorer: names{""}}, "distinct"},
	} {
		if _, err := NewSnapshotter(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want mention of %q", tc.name, err, tc.want)
		}
	}
}

// With centred data the sampler starts from U[−1, 1] and Draw maps the
// result back to [0, 1]: with a zero score and a negligible step, the samples
// are the start mapped back, the same values as without centring.
func TestDrawCentered(t *testing.T) {
	for _, centered := range []bool{false, true} {
		rc := tinyRun(t, "sample.eps=1e-14", "sample.denoise=false", "data.centered="+map[bool]string{false: "false", true: "true"}[centered])
		zero := make([]float32, len(weights(t, rc)))
		x, err := Draw(context.Background(), rc, zero, Options{N: 3, Seed: 9, Sample: rc.Sample})
		if err != nil {
			t.Fatal(err)
		}
		u := make([]float32, len(x))
		model.InitUniform(u, 0, 1, 9)
		for i := range x {
			if math.Abs(float64(x[i]-u[i])) > 1e-4 {
				t.Fatalf("centered=%v: sample value %d is %v, want the U[0,1] start %v", centered, i, x[i], u[i])
			}
		}
	}
}
