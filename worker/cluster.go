package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// ClusterConfig configures a distributed worker.
type ClusterConfig struct {
	// Join is the coordinator's gRPC address.
	Join string
	// Listener serves the ring; if nil, Listen ("host:port", port 0 for any) is opened.
	// Once NewCluster succeeds, the Cluster owns it.
	Listener net.Listener
	Listen   string
	// Advertise is the ring address other workers dial. Default: the listener's address,
	// with an unspecified host replaced by the address this host reaches the coordinator from.
	Advertise string
	// Gossip is the memberlist bind address; default the ring host, port 0.
	Gossip          string
	GossipAdvertise string
	Secret          []byte
	// Version must equal the coordinator's.
	Version string
	// RunID, if set, is the run this worker is for; a coordinator of another run refuses it.
	RunID string
	// DataRoot, if set, replaces data.path of the run config (the folder of dataset files).
	DataRoot string
	Logger   *slog.Logger
	// Registerer receives the worker's and its ring's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// JoinTimeout bounds the first join (default 30 s); RejoinTimeout bounds re-joining after
	// the coordinator was lost (default 2 min).
	JoinTimeout, RejoinTimeout time.Duration
	// ServerTLS and ClientTLS, if set, put the worker's connections under TLS: the first
	// for the ring's streams that neighbours open to it, the second for the coordinator and
	// the streams it opens to its neighbours (cluster.TLSFiles makes both). Without them,
	// connections are plaintext.
	ServerTLS, ClientTLS *tls.Config
	// OnStep, if set, is called after every step applied to the replica.
	OnStep func(StepInfo)
	// OnTransition, if set, is called on Run's goroutine after every move of the worker's
	// state machine (a step is Training → Training). It must not block.
	OnTransition func(Transition)
}

// Cluster is a worker of a distributed run: a state machine (Phase) that joins the
// coordinator, follows its ring views, brings its replica to each view's canonical state,
// computes its slice of each step with the same Trainer as Local, all-reduces the gradient
// with its neighbours, applies it with model.State.Apply, and (as rank 0) commits it.
//
// NewCluster opens the ring listener and the client connection to the coordinator; the
// first join builds the replica, the ring, its server and the gossip node from the run
// config (see member). Run releases all of them before it returns.
type Cluster struct {
	cfg    ClusterConfig
	log    *slog.Logger
	auth   *cluster.Auth
	lis    net.Listener
	conn   *grpc.ClientConn
	client coordpb.CoordinatorClient
	self   string // ring address
	name   string // memberlist node name
	m      *workerMetrics

	stop chan struct{} // closed by Close or Kill

	mu      sync.Mutex
	started bool // Run was called
	stopped bool // stop is closed
	killed  bool
	member  *member // built by Run's first join
}

// NewCluster validates cfg, opens the ring listener (unless given) and creates the client
// connection to the coordinator (which dials on first use).
func NewCluster(cfg ClusterConfig) (_ *Cluster, err error) {
	if cfg.Join == "" {
		return nil, errors.New("worker: no coordinator address to join")
	}
	if cfg.Version == "" {
		return nil, errors.New("worker: ClusterConfig.Version is empty")
	}
	auth, err := cluster.NewAuth(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if cfg.JoinTimeout == 0 {
		cfg.JoinTimeout = 30 * time.Second
	}
	if cfg.RejoinTimeout == 0 {
		cfg.RejoinTimeout = 2 * time.Minute
	}
	if cfg.JoinTimeout < 0 || cfg.RejoinTimeout < 0 {
		return nil, fmt.Errorf("worker: negative join timeout (%v, %v)", cfg.JoinTimeout, cfg.RejoinTimeout)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lis := cfg.Listener
	if lis == nil {
		if cfg.Listen == "" {
			return nil, errors.New("worker: need ClusterConfig.Listener or Listen")
		}
		if lis, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("worker: listen: %w", err)
		}
		defer func() {
			if err != nil {
				lis.Close()
			}
		}()
	}
	self := cfg.Advertise
	if self == "" {
		if self, err = advertised(lis.Addr().(*net.TCPAddr), cfg.Join); err != nil {
			return nil, err
		}
	}
	if cfg.Gossip == "" {
		h, _, _ := net.SplitHostPort(self)
		cfg.Gossip = net.JoinHostPort(h, "0")
	}
	creds := insecure.NewCredentials()
	if cfg.ClientTLS != nil {
		creds = credentials.NewTLS(cfg.ClientTLS)
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30))}, auth.DialOptions()...)
	conn, err := grpc.NewClient(cfg.Join, opts...)
	if err != nil {
		return nil, fmt.Errorf("worker: coordinator %s: %w", cfg.Join, err)
	}
	m, err := newWorkerMetrics(cfg.Registerer)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &Cluster{
		cfg: cfg, auth: auth, lis: lis, conn: conn, client: coordpb.NewCoordinatorClient(conn), self: self, m: m,
		name: cluster.NodeName(cluster.RoleWorker, self),
		stop: make(chan struct{}),
	}
	c.log = log.With("role", "worker", "addr", self)
	auth.Log = c.log
	return c, nil
}

// advertised is the listener's address, with an unspecified host replaced by the local
// address used to reach the coordinator.
func advertised(a *net.TCPAddr, join string) (string, error) {
	if !a.IP.IsUnspecified() {
		return a.String(), nil
	}
	conn, err := net.Dial("udp", join) // sends nothing: picks the route's source address
	if err != nil {
		return "", fmt.Errorf("worker: find this host's address towards %s: %w (set an advertise address)", join, err)
	}
	defer conn.Close()
	ip := conn.LocalAddr().(*net.UDPAddr).IP
	return net.JoinHostPort(ip.String(), fmt.Sprint(a.Port)), nil
}

// Addr is the worker's ring address.
func (c *Cluster) Addr() string { return c.self }

// Name is the worker's memberlist node name.
func (c *Cluster) Name() string { return c.name }

// State is the replica: nil before the first join; read it after Run returns.
func (c *Cluster) State() *model.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.member == nil {
		return nil
	}
	return c.member.state
}

// Run joins the run and trains until the coordinator says the run is complete (nil), a join
// is refused or times out, a local error stops the worker, or ctx ends or Close or Kill is
// called (ctx's error, context.Canceled for Close and Kill). It may be called once, and
// returns after every goroutine it started has exited and everything the worker opened is
// closed.
func (c *Cluster) Run(ctx context.Context) error {
	c.mu.Lock()
	started, stopped := c.started, c.stopped
	c.started = true
	c.mu.Unlock()
	switch {
	case started:
		return errors.New("worker: Run called twice")
	case stopped:
		return fmt.Errorf("worker: closed before Run: %w", context.Canceled)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	r := &run{c: c, phase: Joining}
	defer func() {
		if r.sess != nil {
			r.sess.close()
		}
		cancel()
		wg.Wait()
		c.release()
	}()
	for {
		from := r.phase
		o, err := r.work(ctx)
		to, ok := next(from, o)
		if !ok {
			err = errors.Join(fmt.Errorf("worker: outcome %v in phase %v (a bug)", o, from), err)
			o, to = Fault, Failed
		}
		r.phase = to
		c.transition(r, Transition{From: from, To: to, Outcome: o, Epoch: r.epoch(), Step: r.step(), Err: err})
		if to == Rejoining && r.sess != nil {
			r.sess.close()
			r.sess = nil
		}
		switch to {
		case Done:
			return nil
		case Stopped:
			cancel()
			return ctx.Err()
		case Failed:
			return err
		}
	}
}

// transition logs a move, updates the phase metric and reports it.
func (c *Cluster) transition(r *run, t Transition) {
	c.m.setPhase(t.From, t.To)
	lvl := slog.LevelDebug
	switch t.Outcome {
	case SyncFailed, PeerFailed, RingFailed, CommitRefused, CoordinatorLost:
		lvl = slog.LevelWarn
	default:
		if t.From != t.To {
			lvl = slog.LevelInfo
		}
	}
	args := []any{"from", t.From, "to", t.To, "outcome", t.Outcome, "epoch", t.Epoch, "step", t.Step}
	if r.id != "" {
		args = append(args, "worker", r.id)
	}
	if t.Err != nil && t.To != Failed { // Run returns a Failed worker's error: handled there
		args = append(args, "err", t.Err)
	}
	c.log.Log(context.Background(), lvl, "worker "+t.To.String(), args...)
	if c.cfg.OnTransition != nil {
		c.cfg.OnTransition(t)
	}
}

// Close makes Run return, leaving the run as a stopping process would: the views stream
// ends and the gossip pool is told. It is idempotent; before Run it releases what
// NewCluster opened.
func (c *Cluster) Close() error {
	c.mu.Lock()
	first, started := !c.stopped, c.started
	c.stopped = true
	c.mu.Unlock()
	if first {
		close(c.stop)
		if !started {
			c.release()
		}
	}
	return nil
}

// Kill is fault injection for tests: it stops the worker as a crash would. Its sockets close
// at once (ring server, coordinator connection, gossip node) with no goodbye: no gossip
// leave, no further call to the coordinator. Run then returns context.Canceled; wait for it
// before reading State. Idempotent, and safe beside Close.
func (c *Cluster) Kill() {
	c.mu.Lock()
	first, started := !c.stopped, c.started
	c.stopped, c.killed = true, true
	m := c.member
	c.mu.Unlock()
	if first {
		close(c.stop)
	}
	if !started {
		if first {
			c.release()
		}
		return
	}
	if m != nil {
		m.drop()
	}
	c.lis.Close()
	c.conn.Close()
}

// release closes everything the worker opened: on Run's way out, or by Close before Run.
func (c *Cluster) release() {
	c.mu.Lock()
	m, crash := c.member, c.killed
	c.mu.Unlock()
	if m != nil {
		m.close(crash)
	}
	c.lis.Close()
	c.conn.Close()
}

// setMember records the member built by the first join, so that Kill can cut it off; a
// Kill that came first cuts it off at once.
func (c *Cluster) setMember(m *member) {
	c.mu.Lock()
	c.member = m
	killed := c.killed
	c.mu.Unlock()
	if killed {
		m.drop()
	}
}

// join calls Join until the coordinator answers or timeout passes. lastEpoch is the newest
// view the worker has acted on: a restarted coordinator issues newer ones.
func (c *Cluster) join(ctx context.Context, timeout time.Duration, lastEpoch uint64) (*coordpb.JoinResponse, Outcome, error) {
	jctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req := &coordpb.JoinRequest{Version: c.cfg.Version, RunId: c.cfg.RunID, Name: c.name, RingAddr: c.self, LastEpoch: lastEpoch}
	wait := 100 * time.Millisecond
	start := time.Now()
	c.log.Info("joining the coordinator", "addr", c.cfg.Join)
	for {
		// Each attempt waits at most a few seconds for a connection, so a worker whose
		// coordinator is not there yet says so every few seconds, with the reason.
		cctx, ccancel := context.WithTimeout(jctx, 3*time.Second)
		resp, err := c.client.Join(cctx, req, grpc.WaitForReady(true))
		ccancel()
		if err == nil {
			return resp, Admitted, nil
		}
		if ctx.Err() != nil {
			return nil, Cancelled, ctx.Err()
		}
		switch status.Code(err) {
		case codes.OutOfRange:
			return nil, RunComplete, nil
		case codes.FailedPrecondition, codes.PermissionDenied, codes.Unauthenticated, codes.ResourceExhausted, codes.InvalidArgument:
			return nil, Refused, fmt.Errorf("worker: join refused by the coordinator at %s: %s", c.cfg.Join, status.Convert(err).Message())
		}
		c.log.Warn("waiting for the coordinator", "addr", c.cfg.Join, "waited", time.Since(start).Round(time.Second), "of", timeout, "err", status.Convert(err).Message())
		select {
		case <-ctx.Done():
			return nil, Cancelled, ctx.Err()
		case <-jctx.Done():
			return nil, Unreachable, fmt.Errorf("worker: could not join the coordinator at %s within %v (is it running, and is --join its gRPC address?): %w", c.cfg.Join, timeout, err)
		case <-time.After(wait):
			wait = min(2*wait, time.Second)
		}
	}
}
