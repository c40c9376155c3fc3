package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// member is what a worker builds from the run config of its first join and keeps across
// re-joins: the replica and its step buffers, the ring with the server that carries it, and
// the gossip node.
type member struct {
	rc     config.Config
	rcJSON string
	log    *slog.Logger

	*replica
	// undo is the replica before its newest step, while undoHeld: a view at that step is
	// reached by copying it back instead of downloading.
	undo     *model.State
	undoHeld bool

	codec    allreduce.Codec
	grad     []float32 // the step's gradient
	statsBuf []float32 // the step's loss statistics, all-reduced without loss
	resid    []float32 // error feedback of a lossy codec
	stats    model.LossStats
	commit   []byte            // rank 0's gradient for the coordinator, as raw float32
	encoded  allreduce.Encoded // or as the ring encoded it

	ring    *allreduce.Ring
	unserve context.CancelFunc // ends the ring's Serve, dropping its connections
	served  chan struct{}      // closed when the ring's Serve has returned
	ml      *memberlist.Memberlist
}

// newMember builds the worker's member of the run rcJSON and serves its ring on lis. On
// error it has closed everything it opened (lis stays the caller's).
func newMember(c *Cluster, rcJSON []byte, lis net.Listener) (_ *member, err error) {
	rc, err := config.FromJSON(rcJSON)
	if err != nil {
		return nil, fmt.Errorf("worker: run config from the coordinator: %w", err)
	}
	switch rc.Data.Name {
	case data.NameMNIST, data.NameFashionMNIST, data.NameCIFAR10:
		// Only file sets have a path; generated ones would refuse one.
		if c.cfg.DataRoot != "" {
			rc.Data.Path = c.cfg.DataRoot
		}
	}
	m := &member{rc: rc, rcJSON: string(rcJSON), log: c.log.With("run", rc.Run.ID)}
	defer func() {
		if err != nil {
			m.close(true)
		}
	}()
	if m.codec, err = allreduce.ParseCodec(rc.AllReduce.Codec, rc.AllReduce.Compressor); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if m.replica, err = newReplica(rc); err != nil {
		return nil, err
	}
	n := len(m.state.Params)
	if m.undo, err = model.NewState(make([]float32, n), rc.Train.AdamConfig, rc.Train.EMA); err != nil {
		return nil, err
	}
	m.stats = model.NewLossStats(len(m.sigmas))
	m.grad = make([]float32, n)
	m.statsBuf = make([]float32, 2*len(m.sigmas))
	if m.codec.Lossy() {
		m.resid = make([]float32, n)
	}
	if m.ring, err = allreduce.New(allreduce.Config{
		Self:      c.self,
		ServerTLS: c.cfg.ServerTLS, ClientTLS: c.cfg.ClientTLS,
		Metadata: c.auth.Metadata, Authorize: c.auth.Authorize,
		ChunkBytes: rc.AllReduce.ChunkBytes, Timeout: time.Duration(rc.AllReduce.Timeout),
		TCPOnly: rc.AllReduce.SameHost == "tcp",
		Logger:  m.log, Registerer: c.cfg.Registerer,
	}); err != nil {
		return nil, err
	}
	if m.ml, err = cluster.NewGossip(cluster.GossipConfig{
		Name: c.name, Bind: c.cfg.Gossip, Advertise: c.cfg.GossipAdvertise, Secret: c.cfg.Secret,
		ProbeInterval: time.Duration(rc.Cluster.ProbeInterval), ProbeTimeout: time.Duration(rc.Cluster.ProbeTimeout), SuspicionMult: rc.Cluster.SuspicionMult,
		Meta:   cluster.Meta{Role: cluster.RoleWorker, Addr: c.self, Run: rc.Run.ID},
		Logger: m.log,
	}); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	ctx, unserve := context.WithCancel(context.Background())
	m.unserve, m.served = unserve, make(chan struct{})
	go func() {
		defer close(m.served)
		// Kill may close lis before Serve begins.
		if err := m.ring.Serve(ctx, lis); err != nil && !errors.Is(err, net.ErrClosed) {
			m.log.Error("ring server", "err", err)
		}
	}()
	return m, nil
}

// drop cuts the member off the network at once, as a crash would: the ring server and its
// connections, and the gossip node without a leave message. It may run beside the worker's
// goroutine; close still has to follow.
func (m *member) drop() {
	if m.unserve != nil {
		m.unserve()
	}
	if m.ml != nil {
		m.ml.Shutdown()
	}
}

// close releases everything, saying goodbye to the gossip pool unless crash. It returns once
// the ring server's and the ring's goroutines have exited. Idempotent.
func (m *member) close(crash bool) {
	if m.unserve != nil {
		m.unserve()
		<-m.served
	}
	if m.ring != nil {
		m.ring.Close()
	}
	if m.ml != nil {
		if !crash {
			if err := m.ml.Leave(500 * time.Millisecond); err != nil {
				m.log.Debug("gossip leave", "err", err)
			}
		}
		m.ml.Shutdown()
	}
	if m.replica != nil {
		m.trainer.Close()
	}
}
