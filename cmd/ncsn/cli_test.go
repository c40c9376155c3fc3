package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ncsn/ncsn/internal/plot"
	"github.com/ncsn/ncsn/internal/runlock"
	"github.com/ncsn/ncsn/internal/safetensors"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/proto/coordpb"
)

func ncsn(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// A small toy run through the single-process path, then sample and eval on
// its checkpoints, as a user would chain them.
func TestTrainSampleEval(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := ncsn(t, "train", "--out", dir, "--set", "data.name=gmm", "--set", "run.steps=30",
		"--set", "run.checkpoint_every=10", "--set", "run.samples=50", "--set", "sample.steps_per_level=5")
	if code != 0 {
		t.Fatalf("train exited %d: %s", code, errs)
	}
	if !strings.Contains(out, "samples.csv") || !strings.Contains(out, "loss.png") {
		t.Fatalf("train output %q does not say where the samples are", out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "samples.csv"))
	if err != nil || !strings.HasPrefix(string(b), "x,y\n") || strings.Count(string(b), "\n") != 51 {
		t.Fatalf("samples.csv: %v %q", err, b)
	}
	// The same 2-D outputs as launch: the CSV and its scatter plot; and a progress line.
	if _, err := os.Stat(filepath.Join(dir, "samples.png")); err != nil || !strings.Contains(out, "scatter plot: ") {
		t.Errorf("train wrote no scatter plot: %v\n%s", err, out)
	}
	if !strings.Contains(errs, "step 30/30  loss ") || !strings.Contains(errs, "sampling: 100%") {
		t.Errorf("train showed no progress:\n%s", errs)
	}

	csv := filepath.Join(dir, "s.csv")
	if _, errs, code := ncsn(t, "sample", "--checkpoint", dir, "--n", "20", "--out", csv, "--sampler", "langevin", "--steps-per-level", "3", "--weights", "raw"); code != 0 {
		t.Fatalf("sample exited %d: %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "s.png")); err != nil {
		t.Fatalf("no scatter plot: %v", err)
	}
	if _, errs, code := ncsn(t, "sample", "--checkpoint", dir, "--out", filepath.Join(dir, "x.png")); code != 2 || !strings.Contains(errs, ".csv") {
		t.Fatalf("2-D samples to .png: exit %d, %s", code, errs)
	}

	out, errs, code = ncsn(t, "eval", "--checkpoint", filepath.Join(dir, "checkpoints", "ckpt-30.safetensors"), "--n", "100", "--held-out", "100", "--steps-per-level", "3", "--json")
	if code != 0 {
		t.Fatalf("eval exited %d: %s", code, errs)
	}
	var r struct {
		Step   int64
		Levels []struct {
			Sigma       float64
			HeldOutLoss float64  `json:"held_out_loss"`
			ScoreError  *float64 `json:"score_error"`
		}
		Modes []struct{ Truth, Sampled float64 }
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("eval json %q: %v", out, err)
	}
	if r.Step != 30 || len(r.Levels) != 10 || r.Levels[0].ScoreError == nil || len(r.Modes) != 2 || r.Modes[1].Truth != 0.8 {
		t.Fatalf("eval report %+v", r)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"train", "--set", "train.lr=-1"}, 2, "train.lr"},
		{[]string{"train", "--set", "nosuch.key=1"}, 2, "nosuch: unknown key"},
		{[]string{"sample"}, 2, "--checkpoint is required"},
		{[]string{"sample", "--checkpoint", "/nonexistent/x"}, 1, "no such file"},
		{[]string{"bench", "nosuch"}, 2, "unknown workload"},
		{[]string{"version"}, 0, ""},
		{[]string{"help", "nosuch"}, 2, "unknown command"},
		// Without a secret of the user's, nothing listens beyond loopback.
		{[]string{"coordinator", "--set", "data.name=gmm", "--out", t.TempDir(), "--listen", ":0", "--gossip", "127.0.0.1:0"}, 2, "head -c 32 /dev/urandom"},
		{[]string{"worker", "--join", "10.1.2.3:7070"}, 2, "no cluster secret"},
	} {
		_, errs, code := ncsn(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("ncsn %v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
}

func TestProgressLine(t *testing.T) {
	var p progress
	t0 := time.Unix(1000, 0)
	r := &coordpb.StatusResponse{Step: 10, TotalSteps: 110, Loss: 1.5, SamplesPerSec: 640, Members: make([]*coordpb.Member, 2)}
	if got := p.line(r, t0); !strings.Contains(got, "step 10/110") || !strings.Contains(got, "ETA ?") || !strings.Contains(got, "workers 2") {
		t.Fatalf("first line %q", got)
	}
	r.Step = 20
	// 10 steps in 5 s: 90 steps left take 45 s.
	if got := p.line(r, t0.Add(5*time.Second)); !strings.Contains(got, "ETA 45s") || !strings.Contains(got, "640 samples/s") {
		t.Fatalf("line %q", got)
	}
	// Before any pace is seen, samples/s and the batch give the ETA: 90 steps × 64 / 640 = 9 s.
	q := progress{batch: 64}
	if got := q.line(r, t0); !strings.Contains(got, "ETA 9s") {
		t.Fatalf("line %q", got)
	}
}

// --print-config shows the resolved config, which loads back to the same run.
func TestPrintConfig(t *testing.T) {
	for _, cmd := range []string{"launch", "train"} {
		out, errs, code := ncsn(t, cmd, "--print-config", "--set", "data.name=moons", "--set", "train.lr=3e-4")
		if code != 0 {
			t.Fatalf("%s --print-config: exit %d, %s", cmd, code, errs)
		}
		p := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(p, []byte(out), 0o644)
		rc, err := config.Load(p, nil)
		if err != nil || rc.Data.Name != "moons" || rc.Train.LR != 3e-4 || rc.Model.Arch != "mlp" {
			t.Fatalf("%s: printed config %q loads as %+v, %v", cmd, out, rc, err)
		}
	}
}

// Every command and bench workload answers -h and `ncsn help CMD` with its usage and
// exit 0, and its help writes flags as the usage line does (--flag) and hides internal ones.
func TestHelp(t *testing.T) {
	var calls [][]string
	for name := range commands {
		calls = append(calls, []string{name, "-h"}, []string{"help", name}, []string{name, "--help"})
	}
	for name := range benchCommands {
		calls = append(calls, []string{"bench", name, "-h"}, []string{"bench", name, "--help"})
	}
	for _, args := range calls {
		out, errs, code := ncsn(t, args...)
		want := "usage: ncsn " + strings.Join(args[:len(args)-1], " ")
		if args[0] == "help" {
			want = "usage: ncsn " + args[1]
		}
		if code != 0 || !strings.Contains(out+errs, want) {
			t.Errorf("ncsn %v: exit %d, output %q", args, code, out+errs)
		}
		for _, l := range strings.Split(out+errs, "\n") {
			if strings.HasPrefix(l, "  -") && !strings.HasPrefix(l, "  --") {
				t.Errorf("ncsn %v: flag written with one dash: %q", args, l)
			}
			if strings.Contains(l, "internal:") {
				t.Errorf("ncsn %v: internal flag in help: %q", args, l)
			}
		}
	}
	// bench's own help names every workload.
	_, errs, _ := ncsn(t, "bench", "-h")
	for name := range benchCommands {
		if !strings.Contains(errs, name) {
			t.Errorf("ncsn bench -h does not name %s: %q", name, errs)
		}
	}
	out, _, code := ncsn(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "ncsn ") {
		t.Errorf("ncsn --version: exit %d, %q", code, out)
	}
	if out, _, code := ncsn(t, "help"); code != 0 || !strings.Contains(out, "commands:") {
		t.Errorf("ncsn help: exit %d, %q", code, out)
	}
}

// An error is prefixed by its command once: "ncsn worker: ...", not "ncsn worker: worker: ...".
func TestErrorPrefixOnce(t *testing.T) {
	_, errs, _ := ncsn(t, "worker", "--join", "127.0.0.1:1", "--join-timeout", "1ms", "--listen", "127.0.0.1:0")
	if strings.Contains(errs, "worker: worker:") || !strings.Contains(errs, "ncsn worker: ") {
		t.Errorf("stderr %q", errs)
	}
}

// NCSN_<FLAG> sets a flag the command line leaves unset; the command line wins; a bad
// value names its variable.
func TestEnvFlags(t *testing.T) {
	dir := t.TempDir()
	gmm := filepath.Join(dir, "gmm.yaml")
	moons := filepath.Join(dir, "moons.yaml")
	os.WriteFile(gmm, []byte("data: {name: gmm}\n"), 0o644)
	os.WriteFile(moons, []byte("data: {name: moons}\n"), 0o644)
	t.Setenv("NCSN_CONFIG", gmm)
	if out, errs, code := ncsn(t, "train", "--print-config"); code != 0 || !strings.Contains(out, "name: gmm") {
		t.Errorf("NCSN_CONFIG: exit %d, %s %s", code, out, errs)
	}
	if out, errs, code := ncsn(t, "train", "--print-config", "--config", moons); code != 0 || !strings.Contains(out, "name: moons") || strings.Contains(out, "gmm") {
		t.Errorf("--config over NCSN_CONFIG: exit %d, %s %s", code, out, errs)
	}
	// Commands typed by hand take no flags from the environment.
	if out, errs, code := ncsn(t, "plan"); code != 0 || strings.Contains(out, "gmm") {
		t.Errorf("plan took NCSN_CONFIG: exit %d, %s %s", code, out, errs)
	}
	t.Setenv("NCSN_JOIN_TIMEOUT", "banana")
	if _, errs, code := ncsn(t, "worker", "--join", "127.0.0.1:1"); code != 2 || !strings.Contains(errs, "$NCSN_JOIN_TIMEOUT") {
		t.Errorf("bad NCSN_JOIN_TIMEOUT: exit %d, %s", code, errs)
	}
}

// A run folder that a live run holds is refused, naming the holder.
func TestRunFolderLocked(t *testing.T) {
	dir := t.TempDir()
	l, err := runlock.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	for _, cmd := range []string{"train", "launch", "coordinator"} {
		_, errs, code := ncsn(t, cmd, "--set", "data.name=gmm", "--out", dir, "--listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0")
		if cmd != "coordinator" {
			_, errs, code = ncsn(t, cmd, "--set", "data.name=gmm", "--out", dir)
		}
		if code == 0 || !strings.Contains(errs, fmt.Sprintf("in use by process %d", os.Getpid())) {
			t.Errorf("ncsn %s on a held folder: exit %d, %q", cmd, code, errs)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "config.yaml")); err == nil {
		t.Error("a refused run wrote config.yaml")
	}
}

// A worker whose coordinator is not there says so at once and every few seconds,
// naming the address and the error.
func TestWorkerWaitingSaysSo(t *testing.T) {
	_, errs, code := ncsn(t, "worker", "--join", "127.0.0.1:1", "--join-timeout", "9s", "--listen", "127.0.0.1:0")
	if code == 0 {
		t.Fatal("joined nothing, exited 0")
	}
	first := strings.Index(errs, "joining the coordinator")
	if first < 0 || !strings.Contains(errs[first:strings.Index(errs[first:], "\n")+first], "127.0.0.1:1") {
		t.Errorf("no 'joining the coordinator' line naming the address:\n%s", errs)
	}
	if n := strings.Count(errs, "waiting for the coordinator"); n < 2 || !strings.Contains(errs, "connection refused") {
		t.Errorf("%d 'waiting for the coordinator' lines in 9 s, want one every few seconds with the error:\n%s", n, errs)
	}
}

// --resume starts a new run folder from another run's checkpoint: it continues the step
// count, may change free keys (a fine-tune with another lr), records where it came from,
// and refuses what cannot work.
func TestResumeFrom(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	base := []string{"--set", "data.name=gmm", "--set", "run.samples=0", "--set", "run.checkpoint_every=100"}
	if _, errs, code := ncsn(t, append([]string{"train", "--out", a, "--set", "run.steps=200"}, base...)...); code != 0 {
		t.Fatalf("train: %s", errs)
	}
	args := append([]string{"train", "--out", b, "--resume", a, "--set", "run.steps=300", "--set", "train.lr=1e-4"}, base...)
	if _, errs, code := ncsn(t, args...); code != 0 {
		t.Fatalf("train --resume: %s", errs)
	}
	f, err := safetensors.ReadFile(filepath.Join(b, "checkpoints", "ckpt-300.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := config.FromJSON([]byte(f.Metadata[model.MetaConfig]))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(a, "checkpoints", "ckpt-200.safetensors") + "@200"; rc.Run.Origin != want || rc.Train.LR != 1e-4 {
		t.Errorf("the fine-tune's checkpoint: origin %q (want %q), lr %v", rc.Run.Origin, want, rc.Train.LR)
	}
	if loss, err := plot.ReadLossLog(filepath.Join(b, "loss.csv")); err != nil || len(loss) != 300 || loss[199] != 0 || loss[200] == 0 {
		t.Errorf("the fine-tune's loss log: %d steps, %v; want steps 201-300 only", len(loss), err)
	}
	for _, tc := range []struct {
		sets []string
		want string
	}{
		{[]string{"--out", b, "--set", "run.steps=400"}, "already holds checkpoints"},
		{[]string{"--out", t.TempDir(), "--set", "run.steps=150"}, "set run.steps above it"},
		{[]string{"--out", t.TempDir(), "--set", "run.steps=400", "--set", "model.hidden=64"}, "set the same model keys"},
	} {
		args := append(append([]string{"train", "--resume", a}, tc.sets...), base...)
		if _, errs, code := ncsn(t, args...); code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("ncsn %v: exit %d, %q; want 2 and %q", args, code, errs, tc.want)
		}
	}
}

// train --metrics serves the run's metrics while it trains.
func TestTrainMetrics(t *testing.T) {
	maddr, scraped := watchMetrics(t, "ncsn_train_loss_per_level")
	if _, errs, code := ncsn(t, "train", "--out", t.TempDir(), "--metrics", maddr, "--set", "data.name=gmm",
		"--set", "run.steps=3000", "--set", "run.samples=0"); code != 0 {
		t.Fatalf("train: %s", errs)
	}
	body := scraped()
	if body == "" {
		t.Fatal("train --metrics: no metrics served during the run")
	}
	// The values are the run's: steps applied, and a finite positive loss per level.
	value := func(name string) float64 {
		for _, l := range strings.Split(body, "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == name {
				v, err := strconv.ParseFloat(f[1], 64)
				if err != nil {
					t.Fatalf("%s: %v", l, err)
				}
				return v
			}
		}
		t.Fatalf("%s not served: %s", name, body)
		return 0
	}
	if n := value("ncsn_train_steps_total"); n < 1 || n > 3000 {
		t.Errorf("ncsn_train_steps_total %v, want 1..3000", n)
	}
	if l := value("ncsn_train_loss"); !(l > 0) || math.IsInf(l, 0) {
		t.Errorf("ncsn_train_loss %v", l)
	}
	if !strings.Contains(body, `ncsn_train_loss_per_level{level="0"}`) {
		t.Errorf("no loss for level 0: %s", body)
	}
}
