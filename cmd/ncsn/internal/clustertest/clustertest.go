// Package clustertest runs in-process clusters — a coordinator and workers over real
// loopback gRPC and memberlist on port 0 — for tests of distributed training.
package clustertest

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ncsn/ncsn/coordinator"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/worker"
)

// Version is the version every node of a test cluster presents.
const Version = "test"

// Secret is the test cluster's secret.
var Secret = []byte("clustertest secret")

// Log collects the log records of a cluster for assertions.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything logged so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Logger writes text records at debug level to l, and to the test log when -v.
func (l *Log) Logger(t testing.TB) *slog.Logger {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster log:\n%s", l.String())
		}
	})
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// Coord is a running coordinator.
type Coord struct {
	*coordinator.Server
	done chan struct{}
	err  error
	// Commits receives every committed step's progress (buffered; never blocks the coordinator).
	Commits chan coordinator.Progress
}

// CoordOptions adjust a test coordinator.
type CoordOptions struct {
	Listen  string // default 127.0.0.1:0
	Gossip  string // default 127.0.0.1:0
	Version string
	Tweak   func(*coordinator.Config)
}

// StartCoordinator starts a coordinator of rc writing to out.
func StartCoordinator(t testing.TB, rc config.Config, out string, log *slog.Logger, o CoordOptions) *Coord {
	t.Helper()
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Gossip == "" {
		o.Gossip = "127.0.0.1:0"
	}
	if o.Version == "" {
		o.Version = Version
	}
	c := &Coord{done: make(chan struct{}), Commits: make(chan coordinator.Progress, 1<<16)}
	cfg := coordinator.Config{
		Run: rc, Out: out, Listen: o.Listen, Gossip: o.Gossip, Secret: Secret, Version: o.Version, Logger: log,
		DoneGrace: 5 * time.Second,
		OnCommit: func(p coordinator.Progress) {
			select {
			case c.Commits <- p:
			default:
			}
		},
	}
	if o.Tweak != nil {
		o.Tweak(&cfg)
	}
	var err error
	// A restarted coordinator reuses its address; the old socket may take a moment to go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.Server, err = coordinator.New(cfg)
		if err == nil || time.Now().After(deadline) || !isAddrInUse(err) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the OS for a free port: there is no event
	}
	if err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	go func() {
		defer close(c.done)
		c.err = c.Server.Run(context.Background())
	}()
	t.Cleanup(func() { c.Close(); <-c.done })
	return c
}

func isAddrInUse(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("address already in use"))
}

// Wait waits for Run to return and gives its error.
func (c *Coord) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(d):
		t.Fatalf("coordinator did not finish within %v", d)
		return nil
	}
}

// Stop crashes the coordinator, as kill -9 would: no memberlist Leave, checkpoints not yet
// written are lost, connections drop. It waits for its goroutines.
func (c *Coord) Stop() {
	c.Server.Kill()
	<-c.done
}

// WaitStep waits until a step >= step is committed and returns its progress.
func (c *Coord) WaitStep(t testing.TB, step int64, d time.Duration) coordinator.Progress {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case p := <-c.Commits:
			if p.Step >= step {
				return p
			}
		case <-timer.C:
			t.Fatalf("step %d not committed within %v", step, d)
		}
	}
}

// Worker is a running worker.
type Worker struct {
	*worker.Cluster
	done chan struct{}
	err  error
}

// WorkerOptions adjust a test worker.
type WorkerOptions struct {
	Version string
	RunID   string
	Secret  []byte
	Tweak   func(*worker.ClusterConfig)
}

// StartWorker starts a worker joining the coordinator at join.
func StartWorker(t testing.TB, join string, log *slog.Logger, o WorkerOptions) *Worker {
	t.Helper()
	if o.Version == "" {
		o.Version = Version
	}
	if o.Secret == nil {
		o.Secret = Secret
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := worker.ClusterConfig{
		Join: join, Listener: lis, Secret: o.Secret, Version: o.Version, RunID: o.RunID, Logger: log,
		JoinTimeout: 20 * time.Second, RejoinTimeout: 30 * time.Second,
	}
	if o.Tweak != nil {
		o.Tweak(&cfg)
	}
	w := &Worker{done: make(chan struct{})}
	if w.Cluster, err = worker.NewCluster(cfg); err != nil {
		lis.Close()
		t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		w.err = w.Cluster.Run(context.Background())
	}()
	t.Cleanup(func() { w.Close(); <-w.done })
	return w
}

// Wait waits for Run to return and gives its error.
func (w *Worker) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-w.done:
		return w.err
	case <-time.After(d):
		t.Fatalf("worker %s did not finish within %v", w.Addr(), d)
		return nil
	}
}

// Kill crashes the worker, as kill -9 would: no memberlist Leave, no goodbye to the
// coordinator, connections dropped. It waits for its goroutines.
func (w *Worker) Kill() {
	w.Cluster.Kill()
	<-w.done
}

// Config is a small, fast run: the 2-D toy mixture with the MLP.
func Config(t testing.TB, sets ...string) config.Config {
	t.Helper()
	base := []string{"data.name=gmm", "run.steps=50", "run.checkpoint_every=10", "run.log_every=10", "run.samples=0",
		"train.global_batch=48", "cluster.hash_every=5", "allreduce.timeout=5s"}
	rc, err := config.Load("", append(base, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// NewState is an empty state of rc's model, for snapshots.
func NewState(t testing.TB, rc config.Config) (*model.State, *model.Net) {
	t.Helper()
	net, err := model.New(rc.Model, rc.Shape())
	if err != nil {
		t.Fatal(err)
	}
	st, err := model.NewState(net.Params().Data, rc.Train.AdamConfig, rc.Train.EMA)
	if err != nil {
		t.Fatal(err)
	}
	return st, net
}
