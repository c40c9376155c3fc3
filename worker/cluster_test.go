package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// These tests drive one or two real workers against a scripted coordinator (stub_test.go)
// and check the path each takes through its state machine.

// steps lists "e<epoch>:s<step>" for steps from..to-1 of one epoch.
func steps(epoch uint64, from, to int64) []string {
	var out []string
	for s := from; s < to; s++ {
		out = append(out, fmt.Sprintf("e%d:s%d", epoch, s))
	}
	return out
}

func checkOutcomes(t *testing.T, w *testWorker, want ...Outcome) {
	t.Helper()
	if got := w.moves.outcomes(); !slices.Equal(got, want) {
		t.Errorf("outcomes %v, want %v; the worker went %s", got, want, w.moves)
	}
}

func checkReplica(t *testing.T, w *testWorker, s *stubCoordinator) {
	t.Helper()
	if w.State() == nil || w.State().Hash() != s.canonHash() {
		t.Error("the replica differs from the canonical state")
	}
}

// TestClusterTrainsToDone: the plain path, joining → waiting → syncing → training → done.
func TestClusterTrainsToDone(t *testing.T) {
	s := newStub(t, stubRun(t))
	w := startWorker(t, s.addr, nil)
	s.view(s.waitJoin(t))
	if err := w.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkOutcomes(t, w, Admitted, ViewReady, InSync, LastStep, RunComplete)
	if got, want := s.committed(), steps(1, 0, 8); !slices.Equal(got, want) {
		t.Errorf("commits %v, want %v", got, want)
	}
	checkReplica(t, w, s)
	if n := w.metric(t, "ncsn_worker_steps_total"); n != 8 {
		t.Errorf("steps_total %v, want 8", n)
	}
}

// TestClusterJoinOutcomes: each answer to Join ends joining as it should, a refusal with the
// coordinator's reason in Run's error.
func TestClusterJoinOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  error  // Join's answer; nil: admit
		secret  string // the worker's, if not the cluster's
		outcome Outcome
		err     string // in Run's error; "" for nil
	}{
		{"wrong version", status.Error(codes.FailedPrecondition, `version mismatch: worker is "stub", coordinator is "v2"; run the same ncsn build everywhere`),
			"", Refused, `join refused by the coordinator at ADDR: version mismatch: worker is "stub", coordinator is "v2"`},
		{"wrong run", status.Error(codes.PermissionDenied, `wrong run: worker asks for run "a", this coordinator runs "b"`),
			"", Refused, `wrong run: worker asks for run "a"`},
		{"run full", status.Error(codes.ResourceExhausted, "run full: 4 workers (max 4 for cluster.max_workers / train.global_batch)"),
			"", Refused, "run full: 4 workers"},
		{"wrong key", nil, "not the cluster secret", Refused, "wrong cluster secret"},
		{"run complete", status.Error(codes.OutOfRange, "the run is complete"), "", RunComplete, ""},
		{"unreachable", status.Error(codes.Unavailable, "starting up"), "", Unreachable, "could not join the coordinator at ADDR within 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStub(t, stubRun(t))
			joins := 0
			var mu sync.Mutex
			s.JoinF = func(ctx context.Context, req *coordpb.JoinRequest) (*coordpb.JoinResponse, error) {
				mu.Lock()
				joins++
				mu.Unlock()
				if tc.answer == nil {
					return s.admit(req)
				}
				return nil, tc.answer
			}
			w := startWorker(t, s.addr, func(c *ClusterConfig) {
				c.JoinTimeout = time.Second
				if tc.secret != "" {
					c.Secret = []byte(tc.secret)
				}
			})
			err := w.wait(t)
			want := strings.ReplaceAll(tc.err, "ADDR", s.addr)
			if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
				t.Fatalf("Run: %v; want an error containing %q", err, want)
			}
			checkOutcomes(t, w, tc.outcome)
			mu.Lock()
			defer mu.Unlock()
			if tc.outcome == Unreachable && joins < 2 {
				t.Errorf("%d join attempts within the timeout, want retries", joins)
			}
			if tc.outcome == Refused && tc.secret == "" && joins != 1 {
				t.Errorf("%d join attempts after a refusal, want 1", joins)
			}
		})
	}
}

// TestClusterViewChangeMidStep: the ring moves to a new view while a step is applied but not
// committed. Refused as stale, the worker undoes the step (no download) and carries on in
// the new view; committed under a new epoch, it keeps it.
func TestClusterViewChangeMidStep(t *testing.T) {
	for _, tc := range []struct {
		name     string
		accept   bool  // the coordinator commits step 3 before moving on
		split    int64 // the first step committed in the new view
		outcomes []Outcome
		rollback float64
	}{
		{"stale epoch refused", false, 3, []Outcome{Admitted, ViewReady, InSync, CommitRefused, ViewReady, RolledBack, LastStep, RunComplete}, 1},
		{"committed, then a new view", true, 4, []Outcome{Admitted, ViewReady, InSync, ViewChanged, ViewReady, InSync, LastStep, RunComplete}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStub(t, stubRun(t))
			var moved atomic.Bool
			s.CommitF = func(ctx context.Context, req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
				if req.Step != 3 || moved.Swap(true) {
					return s.apply(req)
				}
				var resp *coordpb.CommitResponse
				if tc.accept {
					var err error
					if resp, err = s.apply(req); err != nil {
						return nil, err
					}
				}
				s.mu.Lock()
				defer s.mu.Unlock()
				s.epoch++ // a member left while the step was in flight
				if resp == nil {
					return nil, status.Errorf(codes.Aborted, "stale epoch %d: the ring is at epoch %d", req.Epoch, s.epoch)
				}
				resp.Epoch = s.epoch
				return resp, nil
			}
			w := startWorker(t, s.addr, nil)
			id := s.waitJoin(t)
			s.view(id)
			w.moves.to(t, Waiting, tc.outcomes[3])
			s.mu.Lock()
			s.sendLocked(s.viewLocked(s.epoch, id)) // the new view, at the committed step
			s.mu.Unlock()
			if err := w.wait(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkOutcomes(t, w, tc.outcomes...)
			if got, want := s.committed(), append(steps(1, 0, tc.split), steps(2, tc.split, 8)...); !slices.Equal(got, want) {
				t.Errorf("commits %v, want %v", got, want)
			}
			checkReplica(t, w, s)
			if n := w.metric(t, "ncsn_worker_rollbacks_total"); n != tc.rollback {
				t.Errorf("rollbacks_total %v, want %v", n, tc.rollback)
			}
			if n := w.metric(t, "ncsn_worker_state_downloads_total"); n != 0 {
				t.Errorf("state_downloads_total %v, want 0", n)
			}
		})
	}
}

// TestClusterResync: the committer's state hash differs from the canonical state's, so the
// coordinator issues a resync view; the worker can neither keep its state nor undo a step to
// reach it, and downloads it.
func TestClusterResync(t *testing.T) {
	s := newStub(t, stubRun(t))
	var hashed []int64
	s.CommitF = func(ctx context.Context, req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
		resp, err := s.apply(req)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(req.StateHash) > 0 {
			hashed = append(hashed, req.Step)
		}
		if req.Step == 3 {
			// The replica and the canonical state part ways (a bit flip on either side).
			s.canon.Params[0] += 0.5
			if h := s.canon.Hash(); string(req.StateHash) == string(h[:]) {
				s.t.Error("the committed hash matches a state that differs")
			}
			s.epoch++
			s.sendLocked(s.viewLocked(s.epoch, req.WorkerId))
			resp.Epoch = s.epoch
		}
		return resp, nil
	}
	w := startWorker(t, s.addr, nil)
	s.view(s.waitJoin(t))
	if err := w.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkOutcomes(t, w, Admitted, ViewReady, InSync, ViewChanged, ViewReady, Downloaded, LastStep, RunComplete)
	checkReplica(t, w, s) // the perturbed state: it came from the download
	if n := w.metric(t, "ncsn_worker_state_downloads_total"); n != 1 {
		t.Errorf("state_downloads_total %v, want 1", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if want := []int64{1, 3, 5, 7}; !slices.Equal(hashed, want) {
		t.Errorf("commits of steps %v carried a state hash, want %v (cluster.hash_every=2)", hashed, want)
	}
}

// TestClusterCoordinatorLost: the coordinator crashes mid-run; the worker re-joins the
// restarted one, telling it the newest epoch it acted on, ignores a view older than that,
// and finishes the run.
func TestClusterCoordinatorLost(t *testing.T) {
	s := newStub(t, stubRun(t))
	reached := make(chan struct{})
	var once sync.Once
	s.CommitF = func(ctx context.Context, req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
		resp, err := s.apply(req)
		if req.Step == 2 {
			once.Do(func() { close(reached) })
		}
		return resp, err
	}
	w := startWorker(t, s.addr, nil)
	s.view(s.waitJoin(t))
	<-reached
	s.restart()
	w.moves.to(t, Rejoining, CoordinatorLost)
	w.moves.to(t, Waiting, Admitted)
	id := s.waitJoin(t)
	s.mu.Lock()
	if j := s.joins[len(s.joins)-1]; j.LastEpoch != 1 {
		t.Errorf("re-join with last_epoch %d, want 1", j.LastEpoch)
	}
	// A view no newer than the one acted on, then a fresh one.
	s.sendLocked(s.viewLocked(1, id))
	s.epoch++
	s.sendLocked(s.viewLocked(s.epoch, id))
	s.mu.Unlock()
	if tr := w.moves.to(t, Syncing, ViewReady); tr.Epoch != 2 {
		t.Errorf("acted on the view of epoch %d after the re-join, want 2", tr.Epoch)
	}
	if err := w.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := s.committed()
	for i, c := range got {
		if !strings.HasSuffix(c, fmt.Sprintf(":s%d", i)) {
			t.Fatalf("commits %v: step %d missing or repeated", got, i)
		}
	}
	checkReplica(t, w, s)
}

// TestClusterRejoinTimeout: a coordinator that stays away ends the worker after
// RejoinTimeout, with an error that says so.
func TestClusterRejoinTimeout(t *testing.T) {
	s := newStub(t, stubRun(t))
	reached := make(chan struct{})
	s.CommitF = func(ctx context.Context, req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
		if req.Step == 2 {
			close(reached)
			<-ctx.Done() // the coordinator dies with this commit in hand
			return nil, ctx.Err()
		}
		return s.apply(req)
	}
	w := startWorker(t, s.addr, func(c *ClusterConfig) { c.RejoinTimeout = time.Second })
	s.view(s.waitJoin(t))
	<-reached
	s.stop()
	err := w.wait(t)
	if err == nil || !strings.Contains(err.Error(), "could not join the coordinator at "+s.addr+" within 1s") {
		t.Fatalf("Run: %v; want it to say the coordinator could not be re-joined", err)
	}
	w.moves.to(t, Rejoining, CoordinatorLost)
	w.moves.to(t, Failed, Unreachable)
}

// TestSessionDropsStaleViews: a views stream keeps the newest view; an older one after it is
// dropped, never stored.
func TestSessionDropsStaleViews(t *testing.T) {
	s := newStub(t, stubRun(t))
	resp, err := s.admit(&coordpb.JoinRequest{RingAddr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	auth, _ := cluster.NewAuth(stubSecret)
	conn, err := grpc.NewClient(s.addr, append(auth.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ring, err := allreduce.New(allreduce.Config{Self: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	sess, err := openSession(context.Background(), coordpb.NewCoordinatorClient(conn), resp.WorkerId, ring, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	for _, e := range []uint64{3, 2} {
		s.sendLocked(s.viewLocked(e, resp.WorkerId))
	}
	s.mu.Unlock()
	s.endStreams(status.Error(codes.Unavailable, "gone"))
	<-sess.ended
	if v, _ := sess.box.get(); v == nil || v.Epoch != 3 {
		t.Fatalf("the session holds view %v, want epoch 3", v)
	}
	if status.Code(sess.err) != codes.Unavailable || !sess.lost() {
		t.Errorf("session ended with %v, want the stream's Unavailable", sess.err)
	}
	sess.close()
}

// TestClusterTwoWorkers: a ring of two, where rank 1 reports its hash every hash_every steps
// and equals the canonical state; then rank 1 crashes (Kill), rank 0's all-reduce fails on
// it, rank 0 reports it, and finishes the run alone in the next view.
func TestClusterTwoWorkers(t *testing.T) {
	s := newStub(t, stubRun(t, "run.steps=12"))
	hashes := map[int64][32]byte{}
	reached := make(chan struct{})
	s.CommitF = func(ctx context.Context, req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
		resp, err := s.apply(req)
		if err == nil {
			s.mu.Lock()
			hashes[resp.CommittedStep] = s.canon.Hash()
			s.mu.Unlock()
		}
		if req.Step == 5 {
			close(reached)
		}
		return resp, err
	}
	a := startWorker(t, s.addr, nil)
	idA := s.waitJoin(t)
	b := startWorker(t, s.addr, nil)
	idB := s.waitJoin(t)
	s.view(idA, idB)
	<-reached
	b.Kill()
	if err := b.wait(t); !errors.Is(err, context.Canceled) {
		t.Errorf("killed worker's Run: %v, want context.Canceled", err)
	}
	if tr := a.moves.to(t, Waiting, PeerFailed); !strings.Contains(tr.Err.Error(), b.Addr()) {
		t.Errorf("rank 0's all-reduce failed with %v, not naming %s", tr.Err, b.Addr())
	}
	s.mu.Lock()
	if len(s.failures) == 0 || s.failures[0].Peer != b.Addr() || s.failures[0].WorkerId != idA {
		t.Errorf("failure reports %v, want %s naming %s", s.failures, idA, b.Addr())
	}
	s.mu.Unlock()
	s.view(idA)
	if err := a.wait(t); err != nil {
		t.Fatalf("rank 0's Run: %v", err)
	}
	checkOutcomes(t, a, Admitted, ViewReady, InSync, PeerFailed, ViewReady, InSync, LastStep, RunComplete)
	checkReplica(t, a, s)
	if got, want := s.committed(), append(steps(1, 0, 6), steps(2, 6, 12)...); !slices.Equal(got, want) {
		t.Errorf("commits %v, want %v", got, want)
	}
	s.mu.Lock()
	var reported []int64
	for _, r := range s.reports {
		if h := hashes[r.Step]; r.WorkerId != idB || string(r.Hash) != string(h[:]) {
			t.Errorf("report %s step %d: hash differs from the canonical state's", r.WorkerId, r.Step)
		}
		reported = append(reported, r.Step)
	}
	s.mu.Unlock()
	if want := []int64{2, 4, 6}; !slices.Equal(reported, want) && !slices.Equal(reported, want[:2]) {
		t.Errorf("rank 1 reported hashes of steps %v, want %v (its last step may die with it)", reported, want)
	}
}

// waitDeparture waits for the gossip node name to leave the stub's pool.
func waitDeparture(t *testing.T, s *stubCoordinator, name string) {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case n := <-s.Departures:
			if n == name {
				return
			}
		case <-timeout:
			t.Fatalf("gossip did not see %s leave", name)
		}
	}
}

// inPool tells whether the stub's gossip pool holds name as a live member.
func inPool(s *stubCoordinator, name string) bool {
	for _, n := range s.gossip.Members() {
		if n.Name == name {
			return true
		}
	}
	return false
}

// TestClusterStops: every way of stopping a worker returns from Run promptly with no
// goroutine left behind. A stopping worker (ctx, Close) leaves the gossip pool; a killed one
// says nothing, so the stub, which runs no failure detector, still counts it as alive.
func TestClusterStops(t *testing.T) {
	for _, tc := range []struct {
		name string
		// stop stops w once the worker is in the middle of what the case names.
		stop      func(w *testWorker)
		blockStep int64 // commit of this step hangs until the worker's call ends; -1: none
		at        Phase // the phase the worker stops in
		crash     bool
	}{
		{"ctx cancelled while training", func(w *testWorker) { w.cancel() }, -1, Training, false},
		{"ctx cancelled during a commit", func(w *testWorker) { w.cancel() }, 2, Training, false},
		{"Close while waiting for a view", func(w *testWorker) { w.Close() }, -1, Waiting, false},
		{"Kill while training", func(w *testWorker) { w.Kill() }, -1, Training, true},
		{"Kill during a commit", func(w *testWorker) { w.Kill() }, 2, Training, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { verifyNoLeaks(t, ignore) }) // runs last: after the stub and worker are gone
			s := newStub(t, stubRun(t, "run.steps=1000"))
			inCommit := make(chan struct{})
			s.CommitF = func(ctx context.Context, req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
				if req.Step == tc.blockStep {
					close(inCommit)
					<-ctx.Done()
					return nil, ctx.Err()
				}
				return s.apply(req)
			}
			w := startWorker(t, s.addr, nil)
			id := s.waitJoin(t)
			switch {
			case tc.at == Waiting:
				s.view() // a view without the worker: it waits on
				w.moves.to(t, Waiting, ViewIdle)
			case tc.blockStep >= 0:
				s.view(id)
				<-inCommit
			default:
				s.view(id)
				w.moves.wait(t, "a step", func(tr Transition) bool { return tr.Outcome == Stepped })
			}
			t0 := time.Now()
			tc.stop(w)
			if err := w.wait(t); !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v, want context.Canceled", err)
			}
			if d := time.Since(t0); d > 10*time.Second {
				t.Errorf("Run took %v to return", d)
			}
			if tr := w.moves.to(t, Stopped, Cancelled); tr.From != tc.at {
				t.Errorf("stopped from %v, want %v", tr.From, tc.at)
			}
			if tc.crash {
				if !inPool(s, w.Name()) {
					t.Error("the killed worker left the gossip pool: it said goodbye")
				}
			} else {
				waitDeparture(t, s, w.Name())
			}
			if err := w.Close(); err != nil {
				t.Errorf("Close after Run: %v", err)
			}
			w.Kill() // idempotent too
		})
	}
}

// verifyNoLeaks fails t if goroutines beyond those ignored outlive a grace period: a probe
// memberlist had in flight at Shutdown runs until its own timeout, which on a loaded machine
// can exceed goleak's retries of about two seconds.
func verifyNoLeaks(t *testing.T, opts ...goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		err := goleak.Find(opts...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Error(err)
			return
		}
	}
}

// TestClusterCloseBeforeRun: Close before Run releases the listener; Run then refuses to
// start, and a second Run is refused too.
func TestClusterCloseBeforeRun(t *testing.T) {
	defer verifyNoLeaks(t, goleak.IgnoreCurrent())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCluster(ClusterConfig{Join: "127.0.0.1:1", Listener: lis, Secret: stubSecret, Version: stubVersion})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close()
	if err := c.Run(context.Background()); !errors.Is(err, context.Canceled) {
		t.Errorf("Run after Close: %v", err)
	}
	if conn, err := net.Dial("tcp", lis.Addr().String()); err == nil {
		conn.Close()
		t.Error("the listener is still open after Close")
	}
	if err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Run: %v", err)
	}
}
