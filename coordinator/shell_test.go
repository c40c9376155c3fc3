package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/internal/safetensors"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/proto/coordpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// memberlist's listeners and packet handler end a moment after Shutdown returns.
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).packetHandler"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).streamListen"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*NetTransport).tcpListen"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*NetTransport).udpListen"),
	)
}

var testSecret = []byte("coordinator test secret")

// wait bounds every wait on an event; nothing in these tests takes nearly as long.
const wait = 30 * time.Second

// testConfig is a small run on the 2-D toy mixture; memberlist's failure detector
// keeps the run's defaults, which -race on a busy machine does not trip.
func testConfig(t *testing.T, sets ...string) config.Config {
	t.Helper()
	base := []string{"data.name=gmm", "run.steps=40", "run.checkpoint_every=5", "run.keep=10", "run.log_every=10",
		"run.samples=0", "train.global_batch=8", "cluster.hash_every=1000"}
	rc, err := config.Load("", append(base, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// logBuffer collects a test's log, shown when it fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func testLogger(t *testing.T) *slog.Logger {
	var l logBuffer
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			t.Logf("log:\n%s", l.buf.String())
			l.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(&l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testCoord is a coordinator whose Run is going.
type testCoord struct {
	*Server
	done    chan struct{}
	err     error
	commits chan Progress
}

func startCoordinator(t *testing.T, rc config.Config, out string, tweak func(*Config)) *testCoord {
	t.Helper()
	c := &testCoord{done: make(chan struct{}), commits: make(chan Progress, 1024)}
	cfg := Config{
		Run: rc, Out: out, Listen: "127.0.0.1:0", Gossip: "127.0.0.1:0", Secret: testSecret, Version: "test",
		Logger: testLogger(t), DoneGrace: 2 * time.Second,
		OnCommit: func(p Progress) { c.commits <- p },
	}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Server = s
	go func() {
		defer close(c.done)
		c.err = s.Run(context.Background())
	}()
	t.Cleanup(func() { c.Close(); <-c.done })
	return c
}

// waitCommit waits until step is committed.
func (c *testCoord) waitCommit(t *testing.T, step int64) {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case p := <-c.commits:
			if p.Step >= step {
				return
			}
		case <-timer.C:
			t.Fatalf("step %d not committed within %v", step, wait)
		}
	}
}

// runErr waits for Run to return.
func (c *testCoord) runErr(t *testing.T) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(wait):
		t.Fatal("Run did not return")
		return nil
	}
}

// fakeWorker speaks the coordinator's protocol over real gRPC and gossip, step by
// step as the test says: the shell's tests need no model, ring or trainer.
type fakeWorker struct {
	name, ringAddr string
	coord          *testCoord
	conn           *grpc.ClientConn
	client         coordpb.CoordinatorClient
	id             string
	lastEpoch      uint64
	// views and streamErr receive what the Views stream brings.
	views     chan *coordpb.View
	streamErr chan error
	stopView  context.CancelFunc
	streamWG  sync.WaitGroup
	ml        *memberlist.Memberlist
	// left receives the names of the nodes this worker's gossip finds gone;
	// gossipLog is what its memberlist logged.
	left      chan string
	gossipLog logBuffer
}

var ringPorts atomic.Int32

func newFakeWorker(t *testing.T, c *testCoord) *fakeWorker {
	t.Helper()
	// The ring address only names the worker: nothing dials it.
	ring := fmt.Sprintf("127.0.0.1:%d", 20000+ringPorts.Add(1))
	w := &fakeWorker{name: cluster.NodeName(cluster.RoleWorker, ring), ringAddr: ring, coord: c,
		views: make(chan *coordpb.View, 256), streamErr: make(chan error, 1), left: make(chan string, 16)}
	w.dial(t, c)
	t.Cleanup(w.close)
	return w
}

func (w *fakeWorker) dial(t *testing.T, c *testCoord) {
	t.Helper()
	auth, err := cluster.NewAuth(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, auth.DialOptions()...)
	if w.conn, err = grpc.NewClient(c.Addr(), opts...); err != nil {
		t.Fatal(err)
	}
	w.client, w.coord = coordpb.NewCoordinatorClient(w.conn), c
}

// rejoin points the worker at another coordinator (a restarted one).
func (w *fakeWorker) rejoin(t *testing.T, c *testCoord) {
	t.Helper()
	w.closeStream()
	w.conn.Close()
	w.dial(t, c)
	w.join(t)
	w.attach(t)
}

func (w *fakeWorker) closeStream() {
	if w.stopView != nil {
		w.stopView()
		w.streamWG.Wait()
		w.stopView = nil
	}
}

func (w *fakeWorker) close() {
	w.closeStream()
	w.conn.Close()
	if w.ml != nil {
		w.ml.Shutdown()
	}
}

func (w *fakeWorker) join(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, err := w.client.Join(ctx, &coordpb.JoinRequest{Version: "test", Name: w.name, RingAddr: w.ringAddr, LastEpoch: w.lastEpoch})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	w.id = resp.WorkerId
}

// attach opens the worker's Views stream.
func (w *fakeWorker) attach(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := w.client.Views(ctx, &coordpb.ViewsRequest{WorkerId: w.id})
	if err != nil {
		cancel()
		t.Fatalf("views: %v", err)
	}
	w.stopView = cancel
	w.streamErr = make(chan error, 1)
	w.streamWG.Add(1)
	go func() {
		defer w.streamWG.Done()
		for {
			v, err := stream.Recv()
			if err != nil {
				w.streamErr <- err
				return
			}
			w.views <- v
		}
	}()
}

// gossip starts the worker's memberlist node and joins the coordinator's pool.
func (w *fakeWorker) gossip(t *testing.T, rc config.Config) {
	t.Helper()
	ml, err := cluster.NewGossip(cluster.GossipConfig{
		Name: w.name, Bind: "127.0.0.1:0", Secret: testSecret,
		ProbeInterval: time.Duration(rc.Cluster.ProbeInterval), ProbeTimeout: time.Duration(rc.Cluster.ProbeTimeout), SuspicionMult: rc.Cluster.SuspicionMult,
		Meta:   cluster.Meta{Role: cluster.RoleWorker, Addr: w.ringAddr, Run: rc.Run.ID},
		Events: leaveRecorder(w.left),
		Logger: slog.New(slog.NewTextHandler(&w.gossipLog, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	w.ml = ml
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := cluster.JoinGossip(ctx, ml, w.coord.GossipAddr()); err != nil {
		t.Fatal(err)
	}
}

type leaveRecorder chan string

func (leaveRecorder) NotifyJoin(*memberlist.Node)      {}
func (leaveRecorder) NotifyUpdate(*memberlist.Node)    {}
func (l leaveRecorder) NotifyLeave(n *memberlist.Node) { l <- n.Name }

// failureDetected tells whether the worker's gossip declared the node failed by
// probing it (memberlist says so in its log), rather than being told it left.
func (w *fakeWorker) failureDetected(node string) bool {
	w.gossipLog.mu.Lock()
	defer w.gossipLog.mu.Unlock()
	log := w.gossipLog.buf.String()
	return strings.Contains(log, "Suspect "+node+" has failed") || strings.Contains(log, "Marking "+node+" as failed")
}

// waitView waits for a view for which ok holds, skipping others.
func (w *fakeWorker) waitView(t *testing.T, what string, ok func(*coordpb.View) bool) *coordpb.View {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case v := <-w.views:
			w.lastEpoch = max(w.lastEpoch, v.Epoch)
			if ok(v) {
				return v
			}
		case err := <-w.streamErr:
			for {
				select {
				case v := <-w.views: // sent before the stream ended
					if ok(v) {
						return v
					}
					continue
				default:
				}
				break
			}
			t.Fatalf("waiting for a view (%s): the stream ended: %v", what, err)
		case <-timer.C:
			t.Fatalf("no view (%s) within %v", what, wait)
		}
	}
}

func members(ws ...*fakeWorker) func(*coordpb.View) bool {
	return func(v *coordpb.View) bool {
		if len(v.Members) != len(ws) {
			return false
		}
		for i, m := range v.Members {
			if m.WorkerId != ws[i].id {
				return false
			}
		}
		return true
	}
}

// commit sends step's gradient (the same for every step, raw float32) as rank 0.
func (w *fakeWorker) commit(ctx context.Context, epoch uint64, step int64) (*coordpb.CommitResponse, error) {
	n := len(w.coord.grad)
	g := make([]float32, n)
	for i := range g {
		g[i] = float32(i%5-2) * 0.1
	}
	stats := make([]float32, 2*w.coord.cfg.Run.Noise.Levels)
	stats[0], stats[len(stats)/2] = 1, 1
	return w.client.Commit(ctx, &coordpb.CommitRequest{WorkerId: w.id, Epoch: epoch, Step: step,
		Gradient: cluster.AppendFloats(nil, g), LossStats: stats})
}

func (w *fakeWorker) mustCommit(t *testing.T, epoch uint64, step int64) *coordpb.CommitResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	r, err := w.commit(ctx, epoch, step)
	if err != nil {
		t.Fatalf("commit of step %d: %v", step, err)
	}
	return r
}

// stallingWriter blocks the write of the n-th checkpoint (counting from 1) when it
// has created its temp file, until release.
type stallingWriter struct {
	n       int32
	writes  atomic.Int32
	blocked chan struct{} // closed when the write blocks
	release chan struct{}
	once    sync.Once
}

func newStallingWriter(n int32) *stallingWriter {
	return &stallingWriter{n: n, blocked: make(chan struct{}), release: make(chan struct{})}
}

func (w *stallingWriter) hook(s safetensors.Stage) error {
	if s == safetensors.StageCreated && w.writes.Add(1) == w.n {
		close(w.blocked)
		<-w.release
	}
	return nil
}

func (w *stallingWriter) unblock() { w.once.Do(func() { close(w.release) }) }

func (w *stallingWriter) waitBlocked(t *testing.T) {
	t.Helper()
	select {
	case <-w.blocked:
	case <-time.After(wait):
		t.Fatal("the checkpoint write never started")
	}
}

func checkpointSteps(t *testing.T, out string) []int64 {
	t.Helper()
	paths, err := (&model.CheckpointDir{Dir: filepath.Join(out, "checkpoints")}).Newest()
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, p := range paths {
		var s int64
		fmt.Sscanf(filepath.Base(p), "ckpt-%d.safetensors", &s)
		steps = append(steps, s)
	}
	slices.Sort(steps)
	return steps
}

// TestSlowDiskDoesNotStallMembership: while a checkpoint write is stuck on the disk,
// a worker that gossip finds dead is removed and a joiner admitted, each with a new
// view, and the run's status is served; only a commit that would put a third
// checkpoint in the backlog waits, and it is answered once the disk moves.
func TestSlowDiskDoesNotStallMembership(t *testing.T) {
	// The disk stays stuck for the seconds it takes gossip to find b dead.
	rc := testConfig(t, "cluster.min_workers=2")
	out := t.TempDir()
	disk := newStallingWriter(1)
	c := startCoordinator(t, rc, out, func(cfg *Config) { cfg.CheckpointWriter.FaultHook = disk.hook })
	t.Cleanup(disk.unblock) // before the coordinator's cleanup: Run waits for the writer
	a, b := newFakeWorker(t, c), newFakeWorker(t, c)
	a.join(t)
	a.gossip(t, rc)
	a.attach(t)
	a.waitView(t, "a", members(a)) // so that a is rank 0
	b.join(t)
	b.gossip(t, rc)
	b.attach(t)
	v := a.waitView(t, "a and b", members(a, b))

	// Steps 0..13: the write of step 5's checkpoint blocks; step 10's queues behind it.
	for step := int64(0); step < 14; step++ {
		a.mustCommit(t, v.Epoch, step)
		if step == 4 {
			disk.waitBlocked(t)
		}
	}
	blockedAt := time.Now()
	// Step 14's commit asks for step 15's checkpoint: the backlog is full, so the reply waits.
	replied := make(chan *coordpb.CommitResponse, 1)
	commitErr := make(chan error, 1)
	go func() {
		r, err := a.commit(context.Background(), v.Epoch, 14)
		if err != nil {
			commitErr <- err
			return
		}
		replied <- r
	}()
	c.waitCommit(t, 15)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := a.client.Status(ctx, &coordpb.StatusRequest{})
	if err != nil || st.Step != 15 {
		t.Fatalf("status while the disk is stuck: %v, err %v; want step 15", st, err)
	}

	// b's process dies (no Leave); its views stream stays open, so only gossip can tell.
	t0 := time.Now()
	b.ml.Shutdown()
	dead := a.waitView(t, "a alone", members(a))
	if !dead.Waiting || dead.CommittedStep != 15 {
		t.Errorf("view after b's death: waiting %v at step %d; want waiting at 15", dead.Waiting, dead.CommittedStep)
	}
	t.Logf("b's death → view without it after %v, while the disk is stuck", time.Since(t0))
	select {
	case err := <-b.streamErr:
		if status.Code(err) != codes.FailedPrecondition || !bytes.Contains([]byte(err.Error()), []byte("gossip: node left or died")) {
			t.Errorf("b's stream ended with %v, want its removal by gossip", err)
		}
	case <-time.After(wait):
		t.Error("b's stream did not end")
	}

	// A joiner lifts the ring back to min_workers: admitted at once with a new view.
	cw := newFakeWorker(t, c)
	cw.join(t)
	cw.gossip(t, rc)
	cw.attach(t)
	joined := a.waitView(t, "a and the joiner", members(a, cw))
	if joined.Waiting || joined.CommittedStep != 15 {
		t.Errorf("view after the join: waiting %v at step %d; want training from 15", joined.Waiting, joined.CommittedStep)
	}

	select {
	case r := <-replied:
		t.Fatalf("the commit that filled the checkpoint backlog was answered (%v) while the disk is stuck", r)
	case err := <-commitErr:
		t.Fatalf("the commit that filled the checkpoint backlog failed while the disk is stuck: %v", err)
	default:
	}
	t.Logf("disk stuck for %v; membership changed twice meanwhile", time.Since(blockedAt))
	disk.unblock()
	select {
	case r := <-replied:
		if r.CommittedStep != 15 || r.Epoch != joined.Epoch {
			t.Errorf("reply after the disk moved: step %d epoch %d; want 15, the current epoch %d", r.CommittedStep, r.Epoch, joined.Epoch)
		}
	case err := <-commitErr:
		t.Fatalf("commit: %v", err)
	case <-time.After(wait):
		t.Fatal("the waiting commit was not answered after the disk moved")
	}
	c.Close()
	if err := c.runErr(t); err == nil {
		t.Error("Run of an unfinished run returned nil")
	}
	// Close writes every checkpoint asked for.
	if got := checkpointSteps(t, out); !slices.Equal(got, []int64{5, 10, 15}) {
		t.Errorf("checkpoints on disk: %v, want [5 10 15]", got)
	}
}

// TestKillIsACrash: Kill stops the coordinator as a crash would, where Close says
// goodbye. Workers see their views stream break, and gossip finds the coordinator
// dead (after Close: left); the checkpoint being written completes but the one
// queued behind it is lost (after Close: written). A coordinator restarted on the
// folder goes on from the newest checkpoint, where its state is the one the first
// coordinator had at that step, and the worker finishes the run with it.
func TestKillIsACrash(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stop   func(*Server)
		probed bool // gossip found the coordinator by probing, not by its Leave
		ckpts  []int64
		resume int64
	}{
		{"kill", (*Server).Kill, true, []int64{5, 10}, 10},
		// A graceful stop also checkpoints the last committed step: nothing committed is lost.
		{"close", func(s *Server) { s.Close() }, false, []int64{5, 10, 15, 17}, 17},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := testConfig(t, "run.steps=20")
			out := t.TempDir()
			disk := newStallingWriter(2) // step 10's checkpoint
			c := startCoordinator(t, rc, out, func(cfg *Config) { cfg.CheckpointWriter.FaultHook = disk.hook })
			t.Cleanup(disk.unblock)
			w := newFakeWorker(t, c)
			w.join(t)
			w.gossip(t, rc)
			w.attach(t)
			v := w.waitView(t, "the worker", members(w))
			hashes := map[int64][32]byte{}
			st, _ := newState(t, rc)
			for step := int64(0); step < 17; step++ {
				w.mustCommit(t, v.Epoch, step)
				if step == 9 {
					disk.waitBlocked(t)
				}
				if err := c.Snapshot(st); err != nil {
					t.Fatal(err)
				}
				hashes[step+1] = st.Hash()
			}
			tc.stop(c.Server)
			disk.unblock()

			select {
			case err := <-w.streamErr:
				if status.Code(err) != codes.Unavailable {
					t.Errorf("the worker's stream ended with %v, want Unavailable", err)
				}
			case <-time.After(wait):
				t.Fatal("the worker's views stream did not end")
			}
			select {
			case node := <-w.left:
				if got := w.failureDetected(node); got != tc.probed {
					t.Errorf("gossip found the coordinator gone by probing: %v, want %v", got, tc.probed)
				}
			case <-time.After(wait):
				t.Fatal("the worker's gossip did not find the coordinator gone")
			}
			if err := c.runErr(t); err == nil {
				t.Error("Run of an unfinished run returned nil")
			}
			if got := checkpointSteps(t, out); !slices.Equal(got, tc.ckpts) {
				t.Errorf("checkpoints on disk: %v, want %v", got, tc.ckpts)
			}

			c2 := startCoordinator(t, rc, out, nil)
			w.rejoin(t, c2)
			v2 := w.waitView(t, "the worker, by the restarted coordinator", members(w))
			want := hashes[tc.resume]
			if same := bytes.Equal(v2.StateHash, want[:]); v2.CommittedStep != tc.resume || v2.Epoch <= v.Epoch || !same {
				t.Fatalf("restarted view: epoch %d step %d (state equal %v); want epoch > %d, step %d, the state the first coordinator had then",
					v2.Epoch, v2.CommittedStep, same, v.Epoch, tc.resume)
			}
			for step := v2.CommittedStep; step < rc.Run.Steps; step++ {
				w.mustCommit(t, v2.Epoch, step)
			}
			w.waitView(t, "done", func(v *coordpb.View) bool { return v.Done })
			if err := c2.runErr(t); err != nil {
				t.Fatalf("restarted coordinator: %v", err)
			}
			if got := c2.Committed(); got[0] != tc.resume || int64(len(got)) != rc.Run.Steps-tc.resume {
				t.Errorf("restarted coordinator committed %v, want %d..%d", got, tc.resume, rc.Run.Steps-1)
			}
		})
	}
}

func newState(t *testing.T, rc config.Config) (*model.State, *model.Net) {
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

// TestRPCs: the gRPC face of the core: every refusal with the status code the worker
// branches on, a replica's hash mismatch and a neighbour's failure report each with
// their new view, and the end of the run.
func TestRPCs(t *testing.T) {
	rc := testConfig(t, "run.steps=3", "cluster.min_workers=2", "cluster.max_workers=2", "cluster.hash_every=1")
	out := t.TempDir()
	c := startCoordinator(t, rc, out, nil)
	a, b := newFakeWorker(t, c), newFakeWorker(t, c)
	a.join(t)
	a.attach(t)
	a.waitView(t, "a", members(a)) // so that a is rank 0
	b.join(t)
	b.attach(t)
	v := a.waitView(t, "a and b", members(a, b))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	code := func(err error) codes.Code { return status.Code(err) }
	n := len(c.grad)
	stats := make([]float32, 2*rc.Noise.Levels)
	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"join: another build", func() error {
			_, err := a.client.Join(ctx, &coordpb.JoinRequest{Version: "other", Name: "x", RingAddr: "x:1"})
			return err
		}, codes.FailedPrecondition},
		{"join: another run", func() error {
			_, err := a.client.Join(ctx, &coordpb.JoinRequest{Version: "test", RunId: "other", Name: "x", RingAddr: "x:1"})
			return err
		}, codes.PermissionDenied},
		{"join: no ring address", func() error {
			_, err := a.client.Join(ctx, &coordpb.JoinRequest{Version: "test", Name: "x"})
			return err
		}, codes.InvalidArgument},
		{"join: run full", func() error {
			_, err := a.client.Join(ctx, &coordpb.JoinRequest{Version: "test", Name: "x", RingAddr: "x:1"})
			return err
		}, codes.ResourceExhausted},
		{"views: unknown worker", func() error {
			s, err := a.client.Views(ctx, &coordpb.ViewsRequest{WorkerId: "w9-x"})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.NotFound},
		{"state: unknown worker", func() error {
			s, err := a.client.State(ctx, &coordpb.StateRequest{WorkerId: "w9-x"})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.NotFound},
		{"commit: not rank 0", func() error { _, err := b.commit(ctx, v.Epoch, 0); return err }, codes.PermissionDenied},
		{"commit: stale epoch", func() error { _, err := a.commit(ctx, v.Epoch-1, 0); return err }, codes.Aborted},
		{"commit: a step ahead", func() error { _, err := a.commit(ctx, v.Epoch, 1); return err }, codes.FailedPrecondition},
		{"commit: gradient of another size", func() error {
			_, err := a.client.Commit(ctx, &coordpb.CommitRequest{WorkerId: a.id, Epoch: v.Epoch, Gradient: make([]byte, 4*(n-1)), LossStats: stats})
			return err
		}, codes.InvalidArgument},
		{"commit: loss stats of another size", func() error {
			_, err := a.client.Commit(ctx, &coordpb.CommitRequest{WorkerId: a.id, Epoch: v.Epoch, Gradient: make([]byte, 4*n), LossStats: stats[1:]})
			return err
		}, codes.InvalidArgument},
		{"hash report: short hash", func() error {
			_, err := b.client.ReportHash(ctx, &coordpb.HashReport{WorkerId: b.id, Epoch: v.Epoch, Step: 0, Hash: make([]byte, 31)})
			return err
		}, codes.InvalidArgument},
		{"failure report: unknown reporter", func() error {
			_, err := a.client.ReportFailure(ctx, &coordpb.FailureReport{WorkerId: "w9-x", Epoch: v.Epoch, Peer: a.ringAddr})
			return err
		}, codes.NotFound},
	} {
		if got := code(tc.call()); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}

	// A replica whose hash differs gets a view in which it resynchronises.
	a.mustCommit(t, v.Epoch, 0)
	r, err := b.client.ReportHash(ctx, &coordpb.HashReport{WorkerId: b.id, Epoch: v.Epoch, Step: 1, Hash: make([]byte, 32)})
	if err != nil || !r.Mismatch {
		t.Fatalf("report of a wrong hash: %v, err %v; want a mismatch", r, err)
	}
	resync := a.waitView(t, "resync", func(x *coordpb.View) bool { return x.Epoch > v.Epoch })
	var canon [32]byte
	st, _ := newState(t, rc)
	if err := c.Snapshot(st); err != nil {
		t.Fatal(err)
	}
	canon = st.Hash()
	if !members(a, b)(resync) || resync.CommittedStep != 1 || !bytes.Equal(resync.StateHash, canon[:]) {
		t.Errorf("resync view: %v; want a and b at step 1 with the canonical hash", resync)
	}
	got, err := b.client.State(ctx, &coordpb.StateRequest{WorkerId: b.id})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := got.Recv(); err != nil || m.Header == nil || m.Header.Step != 1 || !bytes.Equal(m.Header.Hash, canon[:]) {
		t.Errorf("state download: %v, err %v; want step 1 with the canonical hash", m.GetHeader(), err)
	}

	// b blames a for a failed all-reduce: a is removed (its stream says why), b waits alone.
	if _, err := b.client.ReportFailure(ctx, &coordpb.FailureReport{WorkerId: b.id, Epoch: resync.Epoch, Peer: a.ringAddr, Reason: "send: broken pipe"}); err != nil {
		t.Fatal(err)
	}
	alone := b.waitView(t, "b alone", members(b))
	select {
	case err := <-a.streamErr:
		if code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "reported by "+b.id+": send: broken pipe") {
			t.Errorf("a's stream ended with %v, want its removal on b's report", err)
		}
	case <-time.After(wait):
		t.Fatal("a's stream did not end")
	}
	if !alone.Waiting {
		t.Error("one worker of min_workers 2 is not waiting")
	}
	if _, err := b.commit(ctx, alone.Epoch, 1); code(err) != codes.FailedPrecondition {
		t.Errorf("commit while waiting: %v, want FailedPrecondition", err)
	}

	// A third worker brings the ring back, and the run ends.
	d := newFakeWorker(t, c)
	d.join(t)
	d.attach(t)
	both := b.waitView(t, "b and d", members(b, d))
	b.mustCommit(t, both.Epoch, 1)
	b.mustCommit(t, both.Epoch, 2)
	b.waitView(t, "done", func(x *coordpb.View) bool { return x.Done })
	if err := c.runErr(t); err != nil {
		t.Fatal(err)
	}
	// A coordinator started on the completed run tells a joiner so (its Run would
	// return at once, with no worker to wait for).
	c2, err := New(Config{Run: rc, Out: out, Listen: "127.0.0.1:0", Gossip: "127.0.0.1:0", Secret: testSecret, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Join(ctx, &coordpb.JoinRequest{Version: "test", Name: "late", RingAddr: "late:1"}); code(err) != codes.OutOfRange {
		t.Errorf("join after the run: %v, want OutOfRange", err)
	}
}
