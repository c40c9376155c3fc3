package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/proto/coordpb"
)

const (
	stubVersion = "stub"
	waitLimit   = 60 * time.Second // for events that take a second on an idle machine
)

var stubSecret = []byte("stub coordinator secret")

// stubRun is a small run: the 2-D toy mixture with the MLP, exact all-reduce, a state hash
// in every second commit.
func stubRun(t testing.TB, sets ...string) config.Config {
	t.Helper()
	base := []string{"data.name=gmm", "run.steps=8", "run.log_every=4", "run.samples=0", "train.global_batch=16",
		"cluster.hash_every=2", "allreduce.codec=none", "allreduce.compressor=none", "allreduce.timeout=5s"}
	rc, err := config.Load("", append(base, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// stubCoordinator is a coordinator each test scripts, in the style of grpc-go's stubserver:
// a real gRPC server on loopback, with the cluster's authentication and a memberlist seed,
// whose handlers are the test's functions where it sets them (JoinF, CommitF, ReportHashF)
// and otherwise those of a plain coordinator: Join admits, Commit applies the gradient to
// the canonical state and issues the done view after the last step, State streams the
// canonical state. Views are what the test sends: every stream forwards its worker's feed.
type stubCoordinator struct {
	coordpb.UnimplementedCoordinatorServer
	JoinF       func(context.Context, *coordpb.JoinRequest) (*coordpb.JoinResponse, error)
	CommitF     func(context.Context, *coordpb.CommitRequest) (*coordpb.CommitResponse, error)
	ReportHashF func(context.Context, *coordpb.HashReport) (*coordpb.HashResponse, error)

	t      testing.TB
	rc     config.Config
	addr   string
	srv    *grpc.Server
	served chan struct{}
	gossip *memberlist.Memberlist
	// Departures receives the names of the gossip nodes that left or were reported dead.
	Departures chan string

	mu       sync.Mutex
	canon    *model.State
	trainer  *Trainer
	grad     []float32
	stats    model.LossStats
	epoch    uint64
	done     bool
	nextID   int
	ringAddr map[string]string   // worker id → ring address
	feeds    map[string]chan any // worker id → views (*coordpb.View) or an error to end the stream
	joins    []*coordpb.JoinRequest
	commits  []*coordpb.CommitRequest // the accepted ones
	reports  []*coordpb.HashReport
	failures []*coordpb.FailureReport
	joined   chan string // ids of admitted workers
}

func newStub(t testing.TB, rc config.Config) *stubCoordinator {
	t.Helper()
	r, err := newReplica(rc) // the canonical state starts where every replica does
	if err != nil {
		t.Fatal(err)
	}
	s := &stubCoordinator{
		t: t, rc: rc, canon: r.state, trainer: r.trainer, grad: make([]float32, len(r.state.Params)),
		stats: model.NewLossStats(len(r.sigmas)), ringAddr: map[string]string{}, feeds: map[string]chan any{},
		joined: make(chan string, 64), Departures: make(chan string, 16),
	}
	if s.gossip, err = cluster.NewGossip(cluster.GossipConfig{
		Name: "stub-coordinator", Bind: "127.0.0.1:0", Secret: stubSecret,
		// The stub never probes: a node leaves its pool only by saying so (Leave) or by
		// another node's report, never by the stub's own failure detector.
		ProbeInterval: time.Hour,
		Meta:          cluster.Meta{Role: cluster.RoleCoordinator, Run: rc.Run.ID}, Events: departures(s.Departures),
	}); err != nil {
		t.Fatal(err)
	}
	s.serve("127.0.0.1:0")
	t.Cleanup(func() {
		s.stop()
		s.gossip.Shutdown()
		s.trainer.Close()
	})
	return s
}

// serve starts the gRPC server on addr.
func (s *stubCoordinator) serve(addr string) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	auth, err := cluster.NewAuth(stubSecret)
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	s.srv = grpc.NewServer(auth.ServerOptions()...)
	coordpb.RegisterCoordinatorServer(s.srv, s)
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		s.srv.Serve(lis)
	}()
}

// stop ends the server and every stream at once, as a crashed coordinator does.
func (s *stubCoordinator) stop() {
	s.srv.Stop()
	<-s.served
}

// restart serves again on the same address: a coordinator restarted from its state. Its
// workers must join again.
func (s *stubCoordinator) restart() {
	s.stop()
	s.mu.Lock()
	s.feeds = map[string]chan any{}
	s.mu.Unlock()
	s.serve(s.addr)
}

type departures chan string

func (d departures) NotifyJoin(*memberlist.Node)   {}
func (d departures) NotifyUpdate(*memberlist.Node) {}
func (d departures) NotifyLeave(n *memberlist.Node) {
	select {
	case d <- n.Name:
	default:
	}
}

func (s *stubCoordinator) Join(ctx context.Context, req *coordpb.JoinRequest) (*coordpb.JoinResponse, error) {
	if s.JoinF != nil {
		return s.JoinF(ctx, req)
	}
	return s.admit(req)
}

// admit is the plain Join.
func (s *stubCoordinator) admit(req *coordpb.JoinRequest) (*coordpb.JoinResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.joins = append(s.joins, req)
	if s.done {
		return nil, status.Error(codes.OutOfRange, "the run is complete")
	}
	s.nextID++
	id := fmt.Sprintf("w%d", s.nextID)
	s.ringAddr[id] = req.RingAddr
	s.feeds[id] = make(chan any, 64)
	s.joined <- id
	return &coordpb.JoinResponse{Config: s.rc.JSON(), WorkerId: id, GossipAddr: cluster.GossipAddr(s.gossip), Version: stubVersion}, nil
}

// waitJoin returns the id of the next admitted worker.
func (s *stubCoordinator) waitJoin(t testing.TB) string {
	t.Helper()
	select {
	case id := <-s.joined:
		return id
	case <-time.After(waitLimit):
		t.Fatal("no worker joined")
		return ""
	}
}

func (s *stubCoordinator) Views(req *coordpb.ViewsRequest, stream coordpb.Coordinator_ViewsServer) error {
	s.mu.Lock()
	feed := s.feeds[req.WorkerId]
	s.mu.Unlock()
	if feed == nil {
		return status.Errorf(codes.NotFound, "unknown worker %q", req.WorkerId)
	}
	for {
		select {
		case x := <-feed:
			if err, ok := x.(error); ok {
				return err
			}
			if err := stream.Send(x.(*coordpb.View)); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// view is the next view, of the given workers at the canonical state; it becomes the
// current epoch and goes to every joined worker.
func (s *stubCoordinator) view(ids ...string) *coordpb.View {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	return s.sendLocked(s.viewLocked(s.epoch, ids...))
}

func (s *stubCoordinator) viewLocked(epoch uint64, ids ...string) *coordpb.View {
	h := s.canon.Hash()
	v := &coordpb.View{Epoch: epoch, CommittedStep: s.canon.Step(), StateHash: h[:]}
	for _, id := range ids {
		v.Members = append(v.Members, &coordpb.Member{WorkerId: id, RingAddr: s.ringAddr[id]})
	}
	return v
}

// sendLocked puts x (a view, or an error that ends the streams) in every worker's feed.
func (s *stubCoordinator) sendLocked(v *coordpb.View) *coordpb.View {
	for _, f := range s.feeds {
		f <- v
	}
	return v
}

// endStreams ends every views stream with err.
func (s *stubCoordinator) endStreams(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.feeds {
		f <- err
	}
}

func (s *stubCoordinator) State(req *coordpb.StateRequest, stream coordpb.Coordinator_StateServer) error {
	s.mu.Lock()
	msgs := model.EncodeStateStream(s.canon, s.canon.Hash(), 4<<10) // several messages
	s.mu.Unlock()
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func (s *stubCoordinator) Commit(ctx context.Context, req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
	if s.CommitF != nil {
		return s.CommitF(ctx, req)
	}
	return s.apply(req)
}

// apply is the plain Commit: the canonical state takes the step, and the last step ends the
// run with the done view.
func (s *stubCoordinator) apply(req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.Epoch != s.epoch {
		return nil, status.Errorf(codes.Aborted, "stale epoch %d: the ring is at epoch %d", req.Epoch, s.epoch)
	}
	if step := s.canon.Step(); req.Step != step {
		return nil, status.Errorf(codes.FailedPrecondition, "commit of step %d, but the committed step is %d", req.Step, step)
	}
	if err := cluster.ReadFloats(s.grad, req.Gradient); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, err := s.canon.Apply(s.grad, s.rc.Train.GlobalBatch); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	s.commits = append(s.commits, req)
	if s.canon.Step() == s.rc.Run.Steps {
		s.done = true
		s.sendLocked(&coordpb.View{Epoch: s.epoch + 1, CommittedStep: s.canon.Step(), Done: true})
	}
	return &coordpb.CommitResponse{CommittedStep: s.canon.Step(), Epoch: s.epoch}, nil
}

func (s *stubCoordinator) ReportHash(ctx context.Context, req *coordpb.HashReport) (*coordpb.HashResponse, error) {
	s.mu.Lock()
	s.reports = append(s.reports, req)
	s.mu.Unlock()
	if s.ReportHashF != nil {
		return s.ReportHashF(ctx, req)
	}
	return &coordpb.HashResponse{}, nil
}

func (s *stubCoordinator) ReportFailure(ctx context.Context, req *coordpb.FailureReport) (*coordpb.FailureResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, req)
	return &coordpb.FailureResponse{}, nil
}

// committed lists the accepted commits' (epoch, step).
func (s *stubCoordinator) committed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.commits {
		out = append(out, fmt.Sprintf("e%d:s%d", c.Epoch, c.Step))
	}
	return out
}

// canonHash is the canonical state's hash.
func (s *stubCoordinator) canonHash() [32]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.canon.Hash()
}

// transitions records a worker's moves for tests to wait on.
type transitions struct {
	mu      sync.Mutex
	all     []Transition
	changed chan struct{}
	next    int // the first transition the next wait looks at
}

func newTransitions() *transitions { return &transitions{changed: make(chan struct{})} }

func (r *transitions) add(t Transition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, t)
	close(r.changed)
	r.changed = make(chan struct{})
}

// wait returns the first transition after the last one waited for that matches f.
func (r *transitions) wait(t testing.TB, what string, f func(Transition) bool) Transition {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		r.mu.Lock()
		for i := r.next; i < len(r.all); i++ {
			if f(r.all[i]) {
				r.next = i + 1
				tr := r.all[i]
				r.mu.Unlock()
				return tr
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no transition %s; the worker went %s", what, r)
			return Transition{}
		}
	}
}

// to waits for the next move into phase to with outcome o.
func (r *transitions) to(t testing.TB, to Phase, o Outcome) Transition {
	t.Helper()
	return r.wait(t, fmt.Sprintf("to %v by %v", to, o), func(tr Transition) bool { return tr.To == to && tr.Outcome == o })
}

// String is the path so far, steps folded: "joining -admitted-> waiting ...".
func (r *transitions) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString(Joining.String())
	for _, t := range r.all {
		if t.Outcome == Stepped {
			b.WriteString(" .")
			continue
		}
		fmt.Fprintf(&b, " -%v(e%d,s%d)-> %v", t.Outcome, t.Epoch, t.Step, t.To)
	}
	return b.String()
}

// outcomes lists the outcomes so far, steps left out.
func (r *transitions) outcomes() []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Outcome
	for _, t := range r.all {
		if t.Outcome != Stepped {
			out = append(out, t.Outcome)
		}
	}
	return out
}

// testWorker is a Cluster running against a stub.
type testWorker struct {
	*Cluster
	moves  *transitions
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// startWorker runs a worker against the stub at join; tweak adjusts its config.
func startWorker(t testing.TB, join string, tweak func(*ClusterConfig)) *testWorker {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &testWorker{moves: newTransitions(), reg: prometheus.NewRegistry(), done: make(chan struct{})}
	cfg := ClusterConfig{
		Join: join, Listener: lis, Secret: stubSecret, Version: stubVersion, Logger: testLogger(t),
		Registerer: w.reg, JoinTimeout: 20 * time.Second, RejoinTimeout: 20 * time.Second, OnTransition: w.moves.add,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	if w.Cluster, err = NewCluster(cfg); err != nil {
		lis.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.done)
		w.err = w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// wait waits for Run to return and gives its error.
func (w *testWorker) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-w.done:
		return w.err
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return; the worker went %s", w.moves)
		return nil
	}
}

// metric is the value of one of the worker's metrics.
func (w *testWorker) metric(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := w.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// testLogger logs at debug level into a buffer that a failed test prints: memberlist may
// still log a moment after Run returns, when the test's own log is closed.
func testLogger(t testing.TB) *slog.Logger {
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", b.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
