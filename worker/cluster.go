package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// ClusterConfig configures a distributed worker.
type ClusterConfig struct {
	// Join is the coordinator's gRPC address.
	Join string
	// Listener serves the ring; if nil, Listen ("host:port", port 0 for any) is opened.
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
	// DialOptions and ServerOptions are added to the worker's (e.g. TLS credentials). Without
	// transport credentials in DialOptions, connections are plaintext.
	DialOptions   []grpc.DialOption
	ServerOptions []grpc.ServerOption
	// OnStep, if set, is called after every step applied to the replica.
	OnStep func(StepInfo)
}

// Cluster is a worker of a distributed run: it joins the coordinator, follows its ring views,
// computes its slice of each step with the same Trainer as Local, all-reduces the gradient
// with its neighbours, applies it to its replica with model.State.Apply, and (as rank 0)
// commits it.
type Cluster struct {
	cfg  ClusterConfig
	log  *slog.Logger
	auth *cluster.Auth
	lis  net.Listener
	self string // ring address
	name string // memberlist node name
	m    *workerMetrics

	closeOnce sync.Once
	closed    chan struct{}

	// Set up by the first join.
	rc       config.Config
	rcJSON   string
	srv      *grpc.Server
	ring     *allreduce.Ring
	ml       *memberlist.Memberlist
	codec    allreduce.Codec
	net      *model.Net
	state    *model.State
	prev     *model.State // the state before the last applied step
	trainer  *Trainer
	buf      []float32 // the step's gradient
	statsBuf []float32 // the step's loss statistics, all-reduced without loss
	resid    []float32
	stats    model.LossStats
	commit   []byte            // rank 0's gradient for the coordinator, as raw float32
	encoded  allreduce.Encoded // or as the ring encoded it

	lastEpoch uint64
	id        string
}

// NewCluster validates cfg and opens the ring listener.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
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
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newWorkerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	lis := cfg.Listener
	if lis == nil {
		if cfg.Listen == "" {
			return nil, errors.New("worker: need ClusterConfig.Listener or Listen")
		}
		if lis, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("worker: listen: %w", err)
		}
	}
	self := cfg.Advertise
	if self == "" {
		if self, err = advertised(lis.Addr().(*net.TCPAddr), cfg.Join); err != nil {
			lis.Close()
			return nil, err
		}
	}
	if cfg.Gossip == "" {
		h, _, _ := net.SplitHostPort(self)
		cfg.Gossip = net.JoinHostPort(h, "0")
	}
	c := &Cluster{
		cfg: cfg, auth: auth, lis: lis, self: self, m: m,
		name:   cluster.NodeName(cluster.RoleWorker, self),
		closed: make(chan struct{}),
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

// State is the replica (valid once the worker has joined; read it after Run returns).
func (c *Cluster) State() *model.State { return c.state }

// errDone ends a session when the run is complete.
var errDone = errors.New("run complete")

// errLost ends a session when the coordinator went away or dropped this worker.
type errLost struct{ err error }

func (e errLost) Error() string { return "lost the coordinator: " + e.err.Error() }
func (e errLost) Unwrap() error { return e.err }

// Run joins the run and trains until the coordinator says the run is complete (nil), the
// coordinator stays unreachable past the join timeouts, a join is refused, or ctx ends.
// It returns after every goroutine it started has exited.
func (c *Cluster) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	var serveWG sync.WaitGroup
	defer func() {
		if c.srv == nil {
			c.lis.Close()
		}
		if c.srv != nil {
			c.srv.Stop()
			serveWG.Wait()
		}
		if c.ring != nil {
			c.ring.Close()
		}
		if c.ml != nil {
			c.ml.Leave(500 * time.Millisecond)
			c.ml.Shutdown()
		}
		if c.trainer != nil {
			c.trainer.Close()
		}
	}()
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30))}, c.auth.DialOptions()...)
	conn, err := grpc.NewClient(c.cfg.Join, append(opts, c.cfg.DialOptions...)...)
	if err != nil {
		return fmt.Errorf("worker: coordinator %s: %w", c.cfg.Join, err)
	}
	defer conn.Close()
	client := coordpb.NewCoordinatorClient(conn)
	timeout := c.cfg.JoinTimeout
	for {
		resp, err := c.join(ctx, client, timeout)
		if errors.Is(err, errDone) {
			c.log.Info("the run is already complete")
			return nil
		}
		if err != nil {
			return err
		}
		if c.srv == nil {
			if err := c.setup(resp); err != nil {
				return err
			}
			serveWG.Add(1)
			go func() {
				defer serveWG.Done()
				if err := c.srv.Serve(c.lis); err != nil {
					c.log.Error("ring server", "err", err)
				}
			}()
		} else if string(resp.Config) != c.rcJSON {
			return fmt.Errorf("worker: the coordinator at %s now runs another config than the one this worker joined", c.cfg.Join)
		}
		gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
		if err := cluster.JoinGossip(gctx, c.ml, resp.GossipAddr); err != nil {
			c.log.Warn("gossip join failed; the coordinator will rely on the views stream", "err", err)
		}
		gcancel()
		err = c.session(ctx, client)
		var lost errLost
		switch {
		case errors.Is(err, errDone):
			c.log.Info("run complete", "step", c.state.Step())
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &lost):
			c.log.Warn("lost the coordinator; re-joining", "err", lost.err, "step", c.state.Step())
			timeout = c.cfg.RejoinTimeout
		default:
			return err
		}
	}
}

// join calls Join until it succeeds, is refused, or timeout passes.
func (c *Cluster) join(ctx context.Context, client coordpb.CoordinatorClient, timeout time.Duration) (*coordpb.JoinResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 100 * time.Millisecond
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := client.Join(cctx, &coordpb.JoinRequest{
			Version: c.cfg.Version, RunId: c.cfg.RunID, Name: c.name, RingAddr: c.self, LastEpoch: c.lastEpoch,
		}, grpc.WaitForReady(true))
		ccancel()
		if err == nil {
			c.id = resp.WorkerId
			c.log.Info("joined", "coordinator", c.cfg.Join, "worker", c.id)
			return resp, nil
		}
		switch status.Code(err) {
		case codes.OutOfRange:
			return nil, errDone
		case codes.FailedPrecondition, codes.PermissionDenied, codes.Unauthenticated, codes.ResourceExhausted, codes.InvalidArgument:
			return nil, fmt.Errorf("worker: join refused by the coordinator at %s: %s", c.cfg.Join, status.Convert(err).Message())
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("worker: could not join the coordinator at %s within %v: %w", c.cfg.Join, timeout, err)
			}
			return nil, ctx.Err()
		case <-time.After(wait):
			wait = min(2*wait, time.Second)
		}
	}
}

// setup builds the replica from the run config of the first join.
func (c *Cluster) setup(resp *coordpb.JoinResponse) error {
	rc, err := config.FromJSON(resp.Config)
	if err != nil {
		return fmt.Errorf("worker: run config from the coordinator: %w", err)
	}
	c.rcJSON = string(resp.Config)
	switch rc.Data.Name {
	case data.NameMNIST, data.NameFashionMNIST, data.NameCIFAR10:
		// Only file sets have a path; generated ones would refuse one.
		if c.cfg.DataRoot != "" {
			rc.Data.Path = c.cfg.DataRoot
		}
	}
	c.rc = rc
	c.log = c.log.With("run", rc.Run.ID)
	if c.codec, err = allreduce.ParseCodec(rc.AllReduce.Codec, rc.AllReduce.Compressor); err != nil {
		return err
	}
	r, err := newReplica(rc)
	if err != nil {
		return err
	}
	c.net, c.state, c.trainer = r.net, r.state, r.trainer
	sigmas := r.sigmas
	n := len(c.state.Params)
	if c.prev, err = model.NewState(make([]float32, n), rc.Train.AdamConfig, rc.Train.EMA); err != nil {
		return err
	}
	c.prev.Adam.Step = -1 // holds nothing yet
	c.stats = model.NewLossStats(len(sigmas))
	c.buf = make([]float32, n)
	c.statsBuf = make([]float32, 2*len(sigmas))
	if c.codec.Lossy() {
		c.resid = make([]float32, len(c.buf))
	}
	if c.ring, err = allreduce.New(allreduce.Config{
		Self: c.self, DialOptions: append(append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, c.auth.DialOptions()...), c.cfg.DialOptions...),
		ChunkBytes: rc.AllReduce.ChunkBytes, Timeout: time.Duration(rc.AllReduce.Timeout),
		Logger: c.log, Registerer: c.cfg.Registerer,
	}); err != nil {
		return err
	}
	opts := append(allreduce.ServerOptions(), c.auth.ServerOptions()...)
	c.srv = grpc.NewServer(append(opts, c.cfg.ServerOptions...)...)
	c.ring.Register(c.srv)
	if c.ml, err = cluster.NewGossip(cluster.GossipConfig{
		Name: c.name, Bind: c.cfg.Gossip, Advertise: c.cfg.GossipAdvertise, Secret: c.cfg.Secret,
		ProbeInterval: time.Duration(rc.Cluster.ProbeInterval), ProbeTimeout: time.Duration(rc.Cluster.ProbeTimeout), SuspicionMult: rc.Cluster.SuspicionMult,
		Meta:   cluster.Meta{Role: cluster.RoleWorker, Addr: c.self, Run: rc.Run.ID},
		Logger: c.log,
	}); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}

// viewBox holds the newest view; ch is closed when it changes.
type viewBox struct {
	mu sync.Mutex
	v  *coordpb.View
	ch chan struct{}
}

func (b *viewBox) set(v *coordpb.View) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.v = v
	close(b.ch)
	b.ch = make(chan struct{})
}

func (b *viewBox) get() (*coordpb.View, chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.v, b.ch
}

func (b *viewBox) epoch() uint64 {
	v, _ := b.get()
	if v == nil {
		return 0
	}
	return v.Epoch
}

// session follows the views of one join until the run is done or the coordinator is lost.
func (c *Cluster) session(ctx context.Context, client coordpb.CoordinatorClient) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Views(sctx, &coordpb.ViewsRequest{WorkerId: c.id})
	if err != nil {
		return errLost{err}
	}
	box := &viewBox{ch: make(chan struct{})}
	var streamErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		for {
			v, err := stream.Recv()
			if err != nil {
				streamErr = err
				return
			}
			if v.Epoch > 0 {
				c.ring.Abort(v.Epoch) // ends the in-flight all-reduce of an older view
			}
			box.set(v)
			if v.Done {
				return
			}
		}
	}()
	err = c.follow(sctx, client, box)
	cancel()
	wg.Wait()
	if v, _ := box.get(); v != nil && v.Done {
		return errDone
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if streamErr != nil {
		return errLost{streamErr}
	}
	if err == nil || errors.Is(err, context.Canceled) {
		return errLost{errors.New("views stream ended")}
	}
	return err
}

// follow trains under each view as it comes until ctx ends or the run is done.
func (c *Cluster) follow(ctx context.Context, client coordpb.CoordinatorClient, box *viewBox) error {
	var handled uint64
	first := true
	for {
		v, ch := box.get()
		if v == nil || (!first && v.Epoch == handled) {
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		first, handled = false, v.Epoch
		c.lastEpoch = max(c.lastEpoch, v.Epoch)
		if v.Done {
			return nil
		}
		rank := -1
		for i, m := range v.Members {
			if m.WorkerId == c.id {
				rank = i
			}
		}
		log := c.log.With("epoch", v.Epoch, "rank", rank)
		if rank < 0 || v.Waiting {
			log.Info("waiting", "members", len(v.Members), "admitted", rank >= 0, "committed_step", v.CommittedStep)
			continue
		}
		log.Info("view", "members", len(v.Members), "committed_step", v.CommittedStep)
		if err := c.syncTo(ctx, client, v, log); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("could not sync to the view; waiting for the next", "err", err)
			continue
		}
		if err := c.train(ctx, client, box, v, rank, log); err != nil {
			return err
		}
	}
}

// syncTo makes the replica equal to the canonical state of the view: it keeps its state or
// rolls back one step if either has the view's hash, and downloads the state otherwise.
func (c *Cluster) syncTo(ctx context.Context, client coordpb.CoordinatorClient, v *coordpb.View, log *slog.Logger) error {
	if c.resid != nil {
		clear(c.resid) // after a failed operation its contents are unspecified
	}
	match := func(s *model.State) bool {
		if s.Step() != v.CommittedStep {
			return false
		}
		h := s.Hash()
		return string(h[:]) == string(v.StateHash)
	}
	if match(c.state) {
		return nil
	}
	if match(c.prev) {
		log.Info("rolled back to the committed step", "from", c.state.Step())
		c.m.rollbacks.Inc()
		return c.state.CopyFrom(c.prev)
	}
	log.Info("downloading the canonical state", "have", c.state.Step())
	return c.download(ctx, client, v)
}

func (c *Cluster) download(ctx context.Context, client coordpb.CoordinatorClient, v *coordpb.View) error {
	t0 := time.Now()
	stream, err := client.State(ctx, &coordpb.StateRequest{WorkerId: c.id})
	if err != nil {
		return fmt.Errorf("worker: download state: %w", err)
	}
	st := c.state
	var hdr *coordpb.StateHeader
	var raw []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("worker: download state: %w", err)
		}
		if hdr == nil {
			if hdr = m.Header; hdr == nil {
				return errors.New("worker: download state: no header")
			}
			if hdr.Params != uint64(len(st.Params)) || hdr.Ema != uint64(len(st.EMA)) {
				return fmt.Errorf("worker: download state: %d params and %d EMA values, the model has %d and %d", hdr.Params, hdr.Ema, len(st.Params), len(st.EMA))
			}
			raw = make([]byte, 0, 4*(3*len(st.Params)+len(st.EMA)))
		}
		if len(raw)+len(m.Data) > cap(raw) {
			return errors.New("worker: download state: more data than the header announced")
		}
		raw = append(raw, m.Data...)
	}
	if hdr == nil || len(raw) != cap(raw) {
		return errors.New("worker: download state: truncated")
	}
	off := 0
	for _, dst := range [][]float32{st.Params, st.EMA, st.Adam.M, st.Adam.V} {
		if err := cluster.ReadFloats(dst, raw[off:off+4*len(dst)]); err != nil {
			return err
		}
		off += 4 * len(dst)
	}
	st.Adam.Step = hdr.Step
	h := st.Hash()
	if string(h[:]) != string(hdr.Hash) {
		return errors.New("worker: downloaded state does not match its hash")
	}
	if hdr.Step != v.CommittedStep || string(hdr.Hash) != string(v.StateHash) {
		return fmt.Errorf("worker: downloaded state is at step %d, the view at %d: a newer view follows", hdr.Step, v.CommittedStep)
	}
	c.prev.Adam.Step = -1
	c.m.downloads.Inc()
	c.log.Info("downloaded the canonical state", "step", hdr.Step, "bytes", len(raw), "seconds", time.Since(t0).Seconds())
	return nil
}

// train runs steps under view v until the view changes, an all-reduce or commit fails
// (waiting for the next view), or the last step is applied.
func (c *Cluster) train(ctx context.Context, client coordpb.CoordinatorClient, box *viewBox, v *coordpb.View, rank int, log *slog.Logger) error {
	rc := c.rc
	B, W := rc.Train.GlobalBatch, len(v.Members)
	lo, hi, err := data.Slice(B, rank, W)
	if err != nil {
		return err
	}
	members := make([]string, W)
	for i, m := range v.Members {
		members[i] = m.RingAddr
	}
	grad, flat := c.buf, c.statsBuf
	every := rc.Cluster.HashEvery
	start, t0 := c.state.Step(), time.Now()
	for s := c.state.Step(); s < rc.Run.Steps; s = c.state.Step() {
		if box.epoch() != v.Epoch {
			return nil
		}
		c.stats.Reset()
		if err := c.trainer.Compute(uint64(s), lo, hi, grad, c.stats); err != nil {
			return err
		}
		c.stats.Put(flat)
		op := allreduce.Op{Run: rc.Run.ID, Epoch: v.Epoch, Step: uint64(s), Members: members, Codec: c.codec, Residual: c.resid}
		// The loss statistics go round the ring beside the gradient, exactly: a
		// lossy codec would corrupt the sample counts and, through error
		// feedback, carry one step's losses into the next.
		statsOp := op
		statsOp.Run, statsOp.Codec, statsOp.Residual = rc.Run.ID+"/loss", allreduce.Codec{}, nil
		statsErr := make(chan error, 1)
		go func() {
			_, err := c.ring.AllReduce(ctx, statsOp, flat)
			statsErr <- err
		}()
		if rank == 0 {
			// The commit carries the sum as the ring encoded it: compressed, and
			// decoding to exactly what the members apply.
			op.Encoded = &c.encoded
		}
		res, err := c.ring.AllReduce(ctx, op, grad)
		if serr := <-statsErr; err == nil {
			err = serr
		}
		if err != nil {
			var pe *allreduce.PeerError
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.As(err, &pe):
				log.Warn("all-reduce failed; reporting the neighbour", "step", s, "peer", pe.Peer, "err", err)
				c.report(ctx, client, v.Epoch, pe.Peer, err.Error())
			case errors.Is(err, allreduce.ErrAborted):
				log.Info("all-reduce aborted by a new view", "step", s)
			default:
				log.Warn("all-reduce failed; waiting for the next view", "step", s, "err", err)
			}
			return nil
		}
		if err := c.stats.Get(flat); err != nil {
			return err
		}
		var encoded *coordpb.EncodedGradient
		if rank == 0 {
			if spans := c.encoded.Spans(); len(spans) > 0 {
				encoded = encodedGradient(&c.encoded, spans)
				c.commit = c.commit[:0]
			} else {
				c.commit = cluster.AppendFloats(c.commit[:0], grad)
			}
		}
		if err := c.prev.CopyFrom(c.state); err != nil {
			return err
		}
		norm, err := c.state.Apply(grad, B)
		if err != nil {
			return err
		}
		done := c.state.Step()
		var hash []byte
		if done%every == 0 {
			h := c.state.Hash()
			hash = h[:]
		}
		if rank == 0 {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			resp, err := client.Commit(cctx, &coordpb.CommitRequest{
				WorkerId: c.id, Epoch: v.Epoch, Step: s, Gradient: c.commit, Encoded: encoded, LossStats: append([]float32(nil), flat...), StateHash: hash,
			})
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				log.Info("commit refused; waiting for the next view", "step", s, "err", status.Convert(err).Message())
				return nil
			}
			if resp.Epoch != v.Epoch {
				return nil // a new view follows
			}
		} else if hash != nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := client.ReportHash(cctx, &coordpb.HashReport{WorkerId: c.id, Epoch: v.Epoch, Step: done, Hash: hash})
			cancel()
			if err == nil && resp.Mismatch {
				log.Warn("replica diverged; a resync view follows", "step", done)
			}
		}
		c.m.steps.Inc()
		c.m.step.Set(float64(done))
		info := StepInfo{
			Step: done, Total: rc.Run.Steps, Loss: c.stats.Mean(), PerLevel: c.stats.PerLevel(), GradNorm: norm, Workers: W,
			SamplesPerSec: float64((done-start)*int64(B)) / time.Since(t0).Seconds(),
		}
		if c.cfg.OnStep != nil {
			c.cfg.OnStep(info)
		}
		if done%rc.Run.LogEvery == 0 || done == rc.Run.Steps {
			log.Info("step", "step", done, "of", rc.Run.Steps, "loss", info.Loss, "grad_norm", norm,
				"samples_per_sec", info.SamplesPerSec, "allreduce_seconds", res.Duration.Seconds())
		}
	}
	return nil
}

func encodedGradient(e *allreduce.Encoded, spans []allreduce.EncodedSpan) *coordpb.EncodedGradient {
	g := &coordpb.EncodedGradient{Codec: e.Codec.String(), Length: uint64(e.Length), Spans: make([]*coordpb.EncodedSpan, len(spans))}
	for i, sp := range spans {
		g.Spans[i] = &coordpb.EncodedSpan{Offset: uint64(sp.Offset), Count: uint64(sp.Count), Data: sp.Data}
	}
	return g
}

// report names a failed neighbour to the coordinator (best effort: the coordinator also
// learns of deaths from gossip and the views streams).
func (c *Cluster) report(ctx context.Context, client coordpb.CoordinatorClient, epoch uint64, peer, reason string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := client.ReportFailure(ctx, &coordpb.FailureReport{WorkerId: c.id, Epoch: epoch, Peer: peer, Reason: reason}); err != nil {
		c.log.Warn("could not report a failed neighbour", "peer", peer, "err", err)
	}
}

// Close makes Run return. It is idempotent.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}
