package clustertest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// The ncsn binary, built once for the tests that run separate processes.
var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binError error
)

func ncsnBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the ncsn binary")
	}
	binOnce.Do(func() {
		binDir, binError = os.MkdirTemp("", "ncsn-clustertest-")
		if binError != nil {
			return
		}
		binPath = filepath.Join(binDir, "ncsn")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/ncsn/ncsn/cmd/ncsn").CombinedOutput()
		if err != nil {
			binError = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binError != nil {
		t.Fatal(binError)
	}
	return binPath
}

// proc is a running ncsn process whose stderr (its log) is scanned line by line.
type proc struct {
	name  string
	cmd   *exec.Cmd
	lines chan string // closed when stderr ends
	first chan string // the first stdout line
	done  chan struct{}
	err   error
	mu    sync.Mutex
	log   strings.Builder
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, lines: make(chan string, 1<<16), first: make(chan string, 1), done: make(chan struct{})}
	p.cmd = exec.Command(ncsnBinary(t), args...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(p.lines)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.first <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		wg.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s log:\n%s", p.name, p.logText())
		}
	})
	return p
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// waitLine waits for a log line matching re and returns its submatches.
func (p *proc) waitLine(t *testing.T, ctx context.Context, re *regexp.Regexp) []string {
	t.Helper()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("%s ended (%v) before logging %v", p.name, p.err, re)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-ctx.Done():
			t.Fatalf("%s: no log line %v: %v", p.name, re, ctx.Err())
		}
	}
}

func (p *proc) wait(t *testing.T, ctx context.Context) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		t.Fatalf("%s did not exit: %v", p.name, ctx.Err())
		return nil
	}
}

func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// addrs reads the coordinator's "coordinator listening on ADDR gossip ADDR" line.
func (p *proc) addrs(t *testing.T, ctx context.Context) (string, string) {
	t.Helper()
	select {
	case l := <-p.first:
		f := strings.Fields(l)
		if len(f) != 6 {
			t.Fatalf("unexpected coordinator output %q", l)
		}
		return f[3], f[5]
	case <-p.done:
		t.Fatalf("coordinator exited: %v", p.err)
	case <-ctx.Done():
		t.Fatal("coordinator did not print its address")
	}
	return "", ""
}

var (
	commitRE   = regexp.MustCompile(`msg=commit .*step=(\d+) .*workers=(\d+)`)
	completeRE = regexp.MustCompile(`msg="run complete" .*commits=(\d+) first_step=(\d+)`)
	resumedRE  = regexp.MustCompile(`msg=resumed .*step=(\d+)`)
)

func atoi(t *testing.T, s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writeConfig(t *testing.T, dir string, sets ...string) (string, config.Config) {
	rc := Config(t, sets...)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, rc.YAML(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, rc
}

func finalCheckpoint(t *testing.T, rc config.Config, out string) int64 {
	t.Helper()
	return lastCheckpoint(t, rc, out).Step
}

// lastCheckpoint is the newest checkpoint in out that verifies.
func lastCheckpoint(t *testing.T, rc config.Config, out string) *model.Checkpoint {
	t.Helper()
	net, err := model.New(rc.Model, rc.Shape())
	if err != nil {
		t.Fatal(err)
	}
	dir := &model.CheckpointDir{Dir: filepath.Join(out, "checkpoints"), Keep: rc.Run.Keep}
	c, _, err := dir.Latest(net.Params())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestProcessWorkerKillAndJoin: kill -9 one of 3 worker processes mid-run; the run goes on
// with 2 and completes every step exactly once; a 4th worker started later is used.
func TestProcessWorkerKillAndJoin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out := t.TempDir()
	cfg, rc := writeConfig(t, out, "run.steps=1500", "run.checkpoint_every=250", "run.log_every=100", "train.global_batch=96", "cluster.min_workers=2")
	coord := startProc(t, "coordinator", "coordinator", "--config", cfg, "--listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--out", out, "--log-level", "debug")
	addr, _ := coord.addrs(t, ctx)
	var ws []*proc
	for i := 0; i < 3; i++ {
		ws = append(ws, startProc(t, fmt.Sprintf("worker-%d", i), "worker", "--join", addr, "--listen", "127.0.0.1:0"))
	}
	m := coord.waitLine(t, ctx, commitRE)
	for atoi(t, m[1]) < 100 || m[2] != "3" {
		m = coord.waitLine(t, ctx, commitRE)
	}
	killed := time.Now()
	ws[1].kill9(t)
	atKill := atoi(t, m[1])
	for m[2] != "2" {
		m = coord.waitLine(t, ctx, commitRE)
	}
	recovery := time.Since(killed)
	t.Logf("kill -9 of a worker at step %d → first commit with 2 workers (step %s) after %v", atKill, m[1], recovery)
	if recovery > 10*time.Second {
		t.Errorf("recovery took %v, want < 10s", recovery)
	}
	ws = append(ws, startProc(t, "worker-3", "worker", "--join", addr, "--listen", "127.0.0.1:0"))
	for m[2] != "3" {
		m = coord.waitLine(t, ctx, commitRE)
	}
	t.Logf("4th worker used from step %s", m[1])
	done := coord.waitLine(t, ctx, completeRE)
	if commits, first := atoi(t, done[1]), atoi(t, done[2]); first != 0 || commits != rc.Run.Steps {
		t.Errorf("%d commits from step %d, want %d from 0", commits, first, rc.Run.Steps)
	}
	if err := coord.wait(t, ctx); err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	for i, w := range ws {
		if i == 1 {
			continue
		}
		if err := w.wait(t, ctx); err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	if s := finalCheckpoint(t, rc, out); s != rc.Run.Steps {
		t.Errorf("final checkpoint at step %d, want %d", s, rc.Run.Steps)
	}
}

// TestProcessCoordinatorRestart: kill -9 the coordinator mid-run and start it again with the
// same folder and addresses; it resumes from the newest checkpoint that verifies, the workers
// re-join, and the run finishes.
func TestProcessCoordinatorRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out := t.TempDir()
	cfg, rc := writeConfig(t, out, "run.steps=1000", "run.checkpoint_every=50", "run.log_every=100", "train.global_batch=96", "cluster.min_workers=2")
	coord := startProc(t, "coordinator", "coordinator", "--config", cfg, "--listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--out", out, "--log-level", "debug")
	addr, gossip := coord.addrs(t, ctx)
	var ws []*proc
	for i := 0; i < 2; i++ {
		ws = append(ws, startProc(t, fmt.Sprintf("worker-%d", i), "worker", "--join", addr, "--listen", "127.0.0.1:0"))
	}
	m := coord.waitLine(t, ctx, commitRE)
	for atoi(t, m[1]) < 120 {
		m = coord.waitLine(t, ctx, commitRE)
	}
	coord.kill9(t)
	last := atoi(t, m[1])
	for l := range coord.lines { // the rest of the dead coordinator's log
		if mm := commitRE.FindStringSubmatch(l); mm != nil {
			last = atoi(t, mm[1])
		}
	}
	coord2 := startProc(t, "coordinator-2", "coordinator", "--config", cfg, "--listen", addr, "--gossip", gossip, "--out", out, "--log-level", "debug")
	r := coord2.waitLine(t, ctx, resumedRE)
	from := atoi(t, r[1])
	t.Logf("coordinator killed after step %d; resumed from checkpoint step %d", last, from)
	if from%rc.Run.CheckpointEvery != 0 || from > last || from < last-2*rc.Run.CheckpointEvery {
		t.Errorf("resumed from step %d after the crash at step %d", from, last)
	}
	done := coord2.waitLine(t, ctx, completeRE)
	if commits, first := atoi(t, done[1]), atoi(t, done[2]); first != from || commits != rc.Run.Steps-from {
		t.Errorf("%d commits from step %d, want %d from %d", commits, first, rc.Run.Steps-from, from)
	}
	if err := coord2.wait(t, ctx); err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	for i, w := range ws {
		if err := w.wait(t, ctx); err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	if s := finalCheckpoint(t, rc, out); s != rc.Run.Steps {
		t.Errorf("final checkpoint at step %d, want %d", s, rc.Run.Steps)
	}
}
