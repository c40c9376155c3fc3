// Package coordinator owns a distributed run's membership and canonical state: it is the
// memberlist seed, admits workers, issues ring views, applies rank 0's committed gradients to
// the canonical state (parameters, Adam, EMA), writes checkpoints and reports status.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/ncsn/ncsn/allreduce"
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
	// CheckpointWriter writes checkpoint files; tests inject faults through it.
	CheckpointWriter safetensors.Writer
	// DoneGrace bounds how long Run waits, once the run is done, for workers to hang up.
	// Default 10 s.
	DoneGrace time.Duration
	// OnCommit, if set, is called (without locks held) after every committed step.
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
	lis    net.Listener
	srv    *grpc.Server
	ml     *memberlist.Memberlist
	// gossipAddr is read once at start: memberlist calls NotifyLeave holding
	// its node lock, which then takes s.mu, so nothing may ask memberlist
	// for its address while holding s.mu.
	gossipAddr string
	total      int64
	batch      int

	closeOnce    sync.Once
	shutdownOnce sync.Once
	closed       chan struct{}

	mu      sync.Mutex
	state   *model.State
	grad    []float32
	codec   allreduce.Codec
	dec     *allreduce.Decoder // of encoded commits
	stats   model.LossStats
	epoch   uint64
	view    *coordpb.View
	viewCh  chan struct{} // closed when view changes
	members []*workerInfo
	workers map[string]*workerInfo // joined and not removed, by id
	nextID  int
	admit   bool // joiners wait for the next step boundary
	done    bool
	doneCh  chan struct{}
	streams int // open Views streams
	// streamsCh is closed when streams changes.
	streamsCh chan struct{}
	hashCache struct {
		step int64
		hash [32]byte
		ok   bool
	}
	hashes    map[int64][32]byte // canonical hashes at report steps
	reports   map[int64][]hashReport
	firstStep int64
	committed []int64
	loss      float64
	lastCkpt  string
	runErr    error
	rate      rateMeter
}

type workerInfo struct {
	id, name, ringAddr string
	lastEpoch          uint64
	streaming          bool
	removed            string // why it was removed, once it was
}

type hashReport struct {
	worker string
	hash   [32]byte
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
		total:     rc.Run.Steps,
		batch:     rc.Train.GlobalBatch,
		closed:    make(chan struct{}),
		state:     state,
		grad:      make([]float32, len(params.Data)),
		stats:     model.NewLossStats(rc.Noise.Levels),
		viewCh:    make(chan struct{}),
		workers:   map[string]*workerInfo{},
		doneCh:    make(chan struct{}),
		hashes:    map[int64][32]byte{},
		reports:   map[int64][]hashReport{},
		streamsCh: make(chan struct{}),
	}
	if err := s.resume(); err != nil {
		return nil, err
	}
	s.firstStep = state.Step()
	s.epoch = 0
	s.view = &coordpb.View{CommittedStep: state.Step(), Waiting: true}
	if state.Step() >= s.total {
		s.done = true
		close(s.doneCh)
		s.view = &coordpb.View{CommittedStep: state.Step(), Done: true}
	}
	s.lis = cfg.Listener
	if s.lis == nil {
		if s.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("coordinator: listen: %w", err)
		}
	}
	opts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(1 << 30), grpc.MaxSendMsgSize(1 << 30)}, auth.ServerOptions()...)
	s.srv = grpc.NewServer(append(opts, cfg.ServerOptions...)...)
	coordpb.RegisterCoordinatorServer(s.srv, s)
	s.ml, err = cluster.NewGossip(cluster.GossipConfig{
		Name:          cluster.NodeName(cluster.RoleCoordinator, s.lis.Addr().String()),
		Bind:          cfg.Gossip,
		Advertise:     cfg.GossipAdvertise,
		Secret:        cfg.Secret,
		ProbeInterval: time.Duration(rc.Cluster.ProbeInterval), ProbeTimeout: time.Duration(rc.Cluster.ProbeTimeout), SuspicionMult: rc.Cluster.SuspicionMult,
		Meta:   cluster.Meta{Role: cluster.RoleCoordinator, Addr: s.lis.Addr().String(), Run: rc.Run.ID},
		Events: events{s},
		Logger: log,
	})
	if err != nil {
		s.lis.Close()
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	s.gossipAddr = cluster.GossipAddr(s.ml)
	m.steps.Add(0)
	m.step.Set(float64(state.Step()))
	log.Info("coordinator ready", "addr", s.lis.Addr().String(), "gossip", s.gossipAddr, "step", state.Step(), "of", s.total)
	return s, nil
}

// resume restores the newest checkpoint that verifies, if there is one.
func (s *Server) resume() error {
	c, path, err := s.ckpt.Latest(s.layout)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("coordinator: %w", err)
	}
	stored, err := config.FromJSON([]byte(c.Meta[model.MetaConfig]))
	if err != nil {
		return fmt.Errorf("coordinator: resume from %s: %w", path, err)
	}
	if string(stored.JSON()) != string(s.cfg.Run.JSON()) {
		return fmt.Errorf("coordinator: %s was written by a run with another config; use another --out or the same config", path)
	}
	if err := c.Restore(s.state); err != nil {
		return fmt.Errorf("coordinator: resume from %s: %w", path, err)
	}
	s.lastCkpt = path
	s.log.Info("resumed", "checkpoint", path, "step", c.Step)
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
	return append([]int64(nil), s.committed...)
}

// Snapshot copies the canonical state into dst (same layout).
func (s *Server) Snapshot(dst *model.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return dst.CopyFrom(s.state)
}

// Epoch is the current view's epoch.
func (s *Server) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// Run serves until the run is done and the workers have hung up (or DoneGrace passed),
// or until ctx ends. It returns nil only for a completed run.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.lis) }()
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
	s.shutdown()
	if e := <-errc; e != nil && err == nil && !errors.Is(e, grpc.ErrServerStopped) {
		err = fmt.Errorf("coordinator: serve: %w", e)
	}
	s.mu.Lock()
	if s.runErr != nil {
		err = errors.Join(err, s.runErr)
	}
	s.mu.Unlock()
	return err
}

// waitHangUp waits until no Views stream is open, for at most DoneGrace.
func (s *Server) waitHangUp(ctx context.Context) {
	t := time.NewTimer(s.cfg.DoneGrace)
	defer t.Stop()
	for {
		s.mu.Lock()
		n, ch := s.streams, s.streamsCh
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

func (s *Server) shutdown() {
	s.closeOnce.Do(func() { close(s.closed) })
	s.shutdownOnce.Do(s.stop)
}

func (s *Server) stop() {
	stopped := make(chan struct{})
	go func() { s.srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		s.srv.Stop()
		<-stopped
	}
	if s.ml != nil {
		s.ml.Leave(500 * time.Millisecond)
		s.ml.Shutdown()
	}
}

// Close stops serving and leaves the gossip pool. It is idempotent; after Run it does nothing more.
func (s *Server) Close() error {
	s.shutdown()
	return nil
}

// checkpointLocked writes the canonical state.
func (s *Server) checkpointLocked() error {
	rc := s.cfg.Run
	meta := map[string]string{
		model.MetaConfig:       string(rc.JSON()),
		model.MetaSeed:         strconv.FormatUint(rc.Run.Seed, 10),
		model.MetaDataPosition: strconv.FormatInt(s.state.Step()*int64(rc.Train.GlobalBatch), 10),
	}
	t0 := time.Now()
	path, err := s.ckpt.Save(model.NewCheckpoint(s.layout, s.state, meta))
	if err != nil {
		s.m.ckptFailures.Inc()
		return err
	}
	s.lastCkpt = path
	s.m.ckptSeconds.Observe(time.Since(t0).Seconds())
	s.log.Info("checkpoint", "path", path, "step", s.state.Step(), "seconds", time.Since(t0).Seconds())
	return nil
}

// hashLocked is the canonical state's hash, cached per step.
func (s *Server) hashLocked() [32]byte {
	st := s.state.Step()
	if !s.hashCache.ok || s.hashCache.step != st {
		s.hashCache.step, s.hashCache.hash, s.hashCache.ok = st, s.state.Hash(), true
	}
	return s.hashCache.hash
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
