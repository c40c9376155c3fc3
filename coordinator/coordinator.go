// Package coordinator is the shell around a distributed run's protocol core
// (package membership): it serves the core's events over gRPC, feeds it
// memberlist's joins and deaths, writes the checkpoints it asks for on a writer
// goroutine, publishes its views, and keeps metrics and logs. The core holds
// the protocol state (members, epochs, commits, the canonical state); the
// shell holds connections, files and clocks.
//
// Locking: mu (the protocol lock) guards the core and what publishes its
// effects; nothing does I/O under it. memberlist's callbacks only enqueue
// (gossipQueue), and checkpoints are copied under mu and written by the writer
// goroutine (checkpointQueue), so neither a slow disk nor a busy lock can stall
// gossip.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/coordinator/membership"
	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/internal/safetensors"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// Config configures a coordinator.
type Config struct {
	Run config.Config
	// Out is the run folder; checkpoints go to Out/checkpoints. The coordinator resumes from
	// the newest checkpoint there that verifies.
	Out string
	// Listener serves gRPC; if nil, Listen ("host:port") is opened.
	Listener net.Listener
	Listen   string
	// Gossip is the memberlist bind address (port 0: any free port); GossipAdvertise, if
	// set, is the address other nodes reach it at.
	Gossip          string
	GossipAdvertise string
	// Secret authenticates every gRPC call and encrypts gossip.
	Secret []byte
	// Version must equal a joining worker's version.
	Version string
	Logger  *slog.Logger
	// Registerer receives the coordinator's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// ServerOptions are added to the gRPC server's (e.g. TLS credentials).
	ServerOptions []grpc.ServerOption
	// CheckpointWriter writes checkpoint files; tests inject faults and stalls through it.
	CheckpointWriter safetensors.Writer
	// DoneGrace bounds how long Run waits, once the run is done, for workers to hang up.
	// Default 10 s.
	DoneGrace time.Duration
	// OnCommit, if set, is called (without the protocol lock held, in commit order)
	// after every committed step.
	OnCommit func(Progress)
	// Snapshots, if set, is offered the canonical EMA weights (the parameters
	// when the EMA is off) after every commit; it copies the ones it takes and
	// never blocks, so the commit does not wait for a snapshot to be drawn.
	Snapshots interface {
		Offer(step int64, weights []float32) bool
	}
}

// Progress describes a committed step.
type Progress struct {
	Step, Total   int64
	Loss          float64
	PerLevel      []float64
	Workers       int
	Epoch         uint64
	SamplesPerSec float64
}

// Server is the coordinator.
type Server struct {
	coordpb.UnimplementedCoordinatorServer

	cfg    Config
	log    *slog.Logger
	m      *metrics
	auth   *cluster.Auth
	layout *model.Params
	ckpt   *model.CheckpointDir
	run    model.RunMeta
	lis    net.Listener
	srv    *grpc.Server
	ml     *memberlist.Memberlist
	// gossipAddr is read once at start, so that nothing asks memberlist for
	// it later.
	gossipAddr string
	total      int64
	batch      int

	gossip *gossipQueue
	ckq    *checkpointQueue

	running  atomic.Bool
	killed   atomic.Bool
	stopOnce sync.Once
	closeOne sync.Once
	closed   chan struct{} // Close, Kill, a failed run or the end of Run: handlers and Run stop waiting
	stopped  chan struct{} // gRPC and gossip are down: the writer and the gossip loop finish

	// commitMu serialises commits: decoding into grad (outside mu) and the
	// OnCommit calls, which therefore come in commit order.
	commitMu sync.Mutex
	codec    allreduce.Codec
	dec      *allreduce.Decoder
	grad     []float32
	rate     rateMeter

	// mu is the protocol lock: it guards core and the state that publishes its
	// effects. Nothing does I/O while holding it.
	mu        sync.Mutex
	core      *membership.Core
	view      *coordpb.View
	viewCh    chan struct{} // closed when view changes
	streams   map[string]*viewStream
	nstreams  int
	streamsCh chan struct{} // closed when nstreams changes
	doneCh    chan struct{} // closed once the final checkpoint is written
	finished  chan struct{} // closed once the final checkpoint is written or lost
	runErr    error
	lastCkpt  string
}

// viewStream is an open Views stream; gone is closed when its worker is removed.
type viewStream struct {
	gone chan struct{}
	why  string
}

// New validates cfg, resumes from the newest verified checkpoint in cfg.Out (if any), and
// opens the gRPC listener and the gossip node. Serve with Run.
func New(cfg Config) (*Server, error) {
	rc := cfg.Run
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	if cfg.Out == "" {
		return nil, errors.New("coordinator: Config.Out is empty")
	}
	if cfg.Version == "" {
		return nil, errors.New("coordinator: Config.Version is empty")
	}
	if cfg.Listener == nil && cfg.Listen == "" {
		return nil, errors.New("coordinator: need Config.Listener or Config.Listen")
	}
	if cfg.Gossip == "" {
		return nil, errors.New("coordinator: Config.Gossip is empty")
	}
	auth, err := cluster.NewAuth(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	if cfg.DoneGrace == 0 {
		cfg.DoneGrace = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("role", "coordinator", "run", rc.Run.ID)
	auth.Log = log
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	net_, err := model.New(rc.Model, rc.Shape())
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	net_.Init(rc.Run.Seed)
	params := net_.Params()
	state, err := model.NewState(params.Data, rc.Train.AdamConfig, rc.Train.EMA)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	codec, err := allreduce.ParseCodec(rc.AllReduce.Codec, rc.AllReduce.Compressor)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	dec, err := allreduce.NewDecoder(codec)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	s := &Server{
		cfg: cfg, log: log, m: m, auth: auth, layout: params, codec: codec, dec: dec,
		ckpt:      &model.CheckpointDir{Dir: filepath.Join(cfg.Out, "checkpoints"), Keep: rc.Run.Keep, Logger: log, Writer: cfg.CheckpointWriter},
		run:       rc.CheckpointRun(),
		total:     rc.Run.Steps,
		batch:     rc.Train.GlobalBatch,
		gossip:    newGossipQueue(),
		ckq:       newCheckpointQueue(),
		closed:    make(chan struct{}),
		stopped:   make(chan struct{}),
		grad:      make([]float32, len(params.Data)),
		viewCh:    make(chan struct{}),
		streams:   map[string]*viewStream{},
		streamsCh: make(chan struct{}),
		doneCh:    make(chan struct{}),
		finished:  make(chan struct{}),
	}
	switch path, err := s.ckpt.Resume(params, state, s.run); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("coordinator: %w", err)
	default:
		s.lastCkpt = path
		log.Info("resumed", "checkpoint", path, "step", state.Step())
	}
	if s.core, err = membership.New(membership.Config{Run: rc, Version: cfg.Version, State: state}); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	s.view = wireView(s.core.View())
	if s.core.Status().Done {
		close(s.doneCh)
		close(s.finished)
	}
	if err := s.listen(); err != nil {
		return nil, err
	}
	m.steps.Add(0)
	m.step.Set(float64(state.Step()))
	log.Info("coordinator ready", "addr", s.lis.Addr().String(), "gossip", s.gossipAddr, "step", state.Step(), "of", s.total)
	return s, nil
}

// listen opens the gRPC listener and server and the gossip node.
func (s *Server) listen() error {
	cfg, rc := s.cfg, s.cfg.Run
	if s.lis = cfg.Listener; s.lis == nil {
		var err error
		if s.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("coordinator: listen: %w", err)
		}
	}
	opts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(1 << 30), grpc.MaxSendMsgSize(1 << 30)}, s.auth.ServerOptions()...)
	s.srv = grpc.NewServer(append(opts, cfg.ServerOptions...)...)
	coordpb.RegisterCoordinatorServer(s.srv, s)
	ml, err := cluster.NewGossip(cluster.GossipConfig{
		Name:          cluster.NodeName(cluster.RoleCoordinator, s.lis.Addr().String()),
		Bind:          cfg.Gossip,
		Advertise:     cfg.GossipAdvertise,
		Secret:        cfg.Secret,
		ProbeInterval: time.Duration(rc.Cluster.ProbeInterval), ProbeTimeout: time.Duration(rc.Cluster.ProbeTimeout), SuspicionMult: rc.Cluster.SuspicionMult,
		Meta:   cluster.Meta{Role: cluster.RoleCoordinator, Addr: s.lis.Addr().String(), Run: rc.Run.ID},
		Events: s.gossip,
		Logger: s.log,
	})
	if err != nil {
		s.lis.Close()
		return fmt.Errorf("coordinator: %w", err)
	}
	s.ml, s.gossipAddr = ml, cluster.GossipAddr(ml)
	return nil
}

// Addr is the gRPC address the coordinator listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// GossipAddr is the memberlist address.
func (s *Server) GossipAddr() string { return s.gossipAddr }

// Done is closed once the final step is committed and checkpointed.
func (s *Server) Done() <-chan struct{} { return s.doneCh }

// Committed is the sequence of steps this coordinator committed, in order (each entry is
// the step a gradient took the state from).
func (s *Server) Committed() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.core.Committed()
}

// Step is the committed step: the updates applied to the canonical state.
func (s *Server) Step() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.core.State().Step()
}

// Snapshot copies the canonical state into dst (same layout).
func (s *Server) Snapshot(dst *model.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return dst.CopyFrom(s.core.State())
}

// Epoch is the current view's epoch.
func (s *Server) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.core.Epoch()
}

// Run serves until the run is done and the workers have hung up (or DoneGrace passed),
// or until ctx ends, Close or Kill. It returns nil only for a completed run, and only
// after the goroutines it started have exited: after Close, once the checkpoints asked
// for are written; after Kill, once the write in progress (if any) ends.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("coordinator: Run called twice")
	}
	var wg sync.WaitGroup
	wg.Add(3)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		errc <- s.srv.Serve(s.lis)
	}()
	go func() {
		defer wg.Done()
		s.writeCheckpoints()
	}()
	go func() {
		defer wg.Done()
		s.followGossip()
	}()
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.closed:
		err = errors.New("coordinator: closed")
	case e := <-errc:
		errc <- e
		err = fmt.Errorf("coordinator: serve: %w", e)
	case <-s.doneCh:
		s.waitHangUp(ctx)
	}
	s.shutdown(false)
	wg.Wait()
	if e := <-errc; e != nil && err == nil && !errors.Is(e, grpc.ErrServerStopped) {
		err = fmt.Errorf("coordinator: serve: %w", e)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runErr != nil {
		return fmt.Errorf("coordinator: %w", s.runErr)
	}
	return err
}

// waitHangUp waits until no Views stream is open, for at most DoneGrace.
func (s *Server) waitHangUp(ctx context.Context) {
	t := time.NewTimer(s.cfg.DoneGrace)
	defer t.Stop()
	for {
		s.mu.Lock()
		n, ch := s.nstreams, s.streamsCh
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			s.log.Warn("workers still connected after the run ended", "streams", n)
			return
		case <-ctx.Done():
			return
		}
	}
}

// close ends every wait on the coordinator: handlers, Run.
func (s *Server) close() { s.closeOne.Do(func() { close(s.closed) }) }

// shutdown stops serving and gossiping, once: politely (in-flight calls end,
// a Leave tells the pool) or, for Kill, as a crash would.
func (s *Server) shutdown(kill bool) {
	s.stopOnce.Do(func() {
		if kill {
			s.killed.Store(true)
			s.ckq.drop()
		} else {
			// Commit nothing more, and checkpoint the last committed step.
			s.step(func(c *membership.Core) { c.Stop() })
		}
		s.close()
		if kill {
			s.srv.Stop()
		} else {
			stopped := make(chan struct{})
			go func() { s.srv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(2 * time.Second):
				s.srv.Stop()
				<-stopped
			}
		}
		s.lis.Close() // Serve closes it, if Run ever served
		if !kill {
			s.ml.Leave(500 * time.Millisecond)
		}
		s.ml.Shutdown()
		close(s.stopped)
	})
}

// Close stops serving and leaves the gossip pool; Run then writes the checkpoints
// already asked for and returns. It is idempotent; after Run it does nothing more.
func (s *Server) Close() error {
	s.shutdown(false)
	return nil
}

// Kill stops the coordinator as a crash would, for fault-injection tests: it sends
// no Leave (the gossip pool must find it dead), drops the checkpoints not yet
// written, and cuts the listener and every connection (grpc's Server.Stop), so
// workers see their streams break. A write in progress cannot be cut short in
// process: it runs to its end, and Run returns after it.
func (s *Server) Kill() {
	s.shutdown(true)
}

// rateMeter measures committed samples per second over a sliding window of commits.
type rateMeter struct {
	times []time.Time
}

func (r *rateMeter) tick(now time.Time) (steps int, secs float64) {
	r.times = append(r.times, now)
	if len(r.times) > 20 {
		r.times = r.times[len(r.times)-20:]
	}
	if len(r.times) < 2 {
		return 0, 0
	}
	return len(r.times) - 1, now.Sub(r.times[0]).Seconds()
}
