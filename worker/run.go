package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// run is one Cluster.Run: the phase, and what the phases hand on to each other. Only Run's
// goroutine touches it.
type run struct {
	c     *Cluster
	phase Phase
	id    string   // worker id given by the current join
	m     *member  // built by the first join
	sess  *session // the current join's views stream; nil until Waiting opens it
	acted uint64   // the newest epoch acted on (JoinRequest.last_epoch)
	view  *coordpb.View
	rank  int
	tr    viewTraining
}

// viewTraining is what the steps of one view share.
type viewTraining struct {
	lo, hi  int      // this worker's slice of the global batch
	members []string // ring addresses in rank order
	log     *slog.Logger
	start   int64 // the replica's step when the view's training began
	t0      time.Time
}

func (r *run) epoch() uint64 {
	if r.view == nil {
		return 0
	}
	return r.view.Epoch
}

func (r *run) step() int64 {
	if r.m == nil {
		return 0
	}
	return r.m.state.Step()
}

// work does the current phase's work and says how it ended.
func (r *run) work(ctx context.Context) (Outcome, error) {
	switch r.phase {
	case Joining:
		return r.join(ctx, r.c.cfg.JoinTimeout)
	case Rejoining:
		return r.join(ctx, r.c.cfg.RejoinTimeout)
	case Waiting:
		return r.await(ctx)
	case Syncing:
		return r.sync(ctx)
	case Training:
		return r.train(ctx)
	}
	return Fault, fmt.Errorf("worker: no work in phase %v", r.phase)
}

// join is Joining and Rejoining: Join, then (the first time) build the member from the run
// config, and join the gossip pool.
func (r *run) join(ctx context.Context, timeout time.Duration) (Outcome, error) {
	c := r.c
	resp, o, err := c.join(ctx, timeout, r.acted)
	if o != Admitted {
		return o, err
	}
	if r.m == nil {
		if r.m, err = newMember(c, resp.Config, c.lis); err != nil {
			return Fault, err
		}
		c.setMember(r.m)
	} else if string(resp.Config) != r.m.rcJSON {
		return Fault, fmt.Errorf("worker: the coordinator at %s now runs another config than the one this worker joined; start a new worker for the new run", c.cfg.Join)
	}
	r.id = resp.WorkerId
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := cluster.JoinGossip(gctx, r.m.ml, resp.GossipAddr); err != nil {
		if ctx.Err() != nil {
			return Cancelled, ctx.Err()
		}
		r.m.log.Warn("gossip join failed; the coordinator will rely on the views stream", "err", err)
	}
	return Admitted, nil
}

// await is Waiting: open the views stream if need be, and take the next fresh view.
func (r *run) await(ctx context.Context) (Outcome, error) {
	if r.sess == nil {
		s, err := openSession(ctx, r.c.client, r.id, r.m.ring, r.m.log)
		if err != nil {
			if ctx.Err() != nil {
				return Cancelled, ctx.Err()
			}
			return CoordinatorLost, fmt.Errorf("worker: views stream: %w", err)
		}
		r.sess = s
	}
	for {
		v, changed := r.sess.box.get()
		if fresh(v, r.acted) {
			r.acted = max(r.acted, v.Epoch)
			o, rank := classify(v, r.id)
			r.view, r.rank = v, rank
			r.m.log.Info("view", "epoch", v.Epoch, "members", len(v.Members), "rank", rank, "committed_step", v.CommittedStep, "waiting", v.Waiting, "done", v.Done)
			return o, nil
		}
		select {
		case <-changed:
		case <-r.sess.ended:
			if v, _ := r.sess.box.get(); fresh(v, r.acted) {
				continue // the done view ends the stream
			}
			return CoordinatorLost, fmt.Errorf("worker: lost the coordinator: %w", r.sess.err)
		case <-ctx.Done():
			return Cancelled, ctx.Err()
		}
	}
}

// interrupted tells whether the worker must leave its phase because ctx ended, a newer view
// arrived, or the views stream ended.
func (r *run) interrupted(ctx context.Context) (Outcome, bool) {
	select {
	case <-r.c.stop:
		return Cancelled, true
	default:
	}
	if ctx.Err() != nil {
		return Cancelled, true
	}
	if v, _ := r.sess.box.get(); v != r.view && fresh(v, r.view.Epoch) {
		return ViewChanged, true
	}
	if r.sess.lost() {
		return CoordinatorLost, true
	}
	return 0, false
}

// idOf names s for a comparison with a state of step want, hashing only if the steps agree.
func idOf(s *model.State, want int64) stateID {
	id := stateID{step: s.Step()}
	if id.step == want {
		id.hash = s.Hash()
	}
	return id
}

// sync is Syncing: bring the replica to the view's state.
func (r *run) sync(ctx context.Context) (Outcome, error) {
	m, v := r.m, r.view
	if m.resid != nil {
		clear(m.resid) // after a failed operation its contents are unspecified
	}
	want := viewState(v)
	o := InSync
	switch planSync(want, idOf(m.state, want.step), idOf(m.undo, want.step), m.undoHeld) {
	case rollBack:
		if err := m.state.CopyFrom(m.undo); err != nil {
			return Fault, err
		}
		m.undoHeld = false
		r.c.m.rollbacks.Inc()
		o = RolledBack
	case download:
		if o, err := r.download(ctx, want); o != Downloaded {
			return o, err
		}
		o = Downloaded
	}
	if err := r.startView(); err != nil {
		return Fault, err
	}
	return o, nil
}

// download replaces the replica by the coordinator's canonical state.
func (r *run) download(ctx context.Context, want stateID) (Outcome, error) {
	m, t0 := r.m, time.Now()
	stream, err := r.c.client.State(r.sess.ctx, &coordpb.StateRequest{WorkerId: r.id})
	if err == nil {
		m.undoHeld = false // the replica is overwritten, so undo is no longer one step behind it
		var h [32]byte
		if h, err = model.DecodeStateStream(m.state, stream.Recv); err == nil && (stateID{m.state.Step(), h}) != want {
			return SyncFailed, fmt.Errorf("worker: downloaded the state of step %d, the view's is step %d: a newer view follows", m.state.Step(), want.step)
		}
	}
	if err != nil {
		if o, ok := r.interrupted(ctx); ok {
			return o, err
		}
		return SyncFailed, fmt.Errorf("worker: download the canonical state: %w", err)
	}
	r.c.m.downloads.Inc()
	m.log.Info("downloaded the canonical state", "step", want.step, "seconds", time.Since(t0).Seconds())
	return Downloaded, nil
}

// startView prepares the steps of the view just synced to.
func (r *run) startView() error {
	v, rc := r.view, r.m.rc
	lo, hi, err := data.Slice(rc.Train.GlobalBatch, r.rank, len(v.Members))
	if err != nil {
		return err
	}
	members := make([]string, len(v.Members))
	for i, mb := range v.Members {
		members[i] = mb.RingAddr
	}
	r.tr = viewTraining{lo: lo, hi: hi, members: members, log: r.m.log.With("epoch", v.Epoch, "rank", r.rank),
		start: r.m.state.Step(), t0: time.Now()}
	return nil
}

// train is one step of Training: compute the slice's gradient, all-reduce it, apply it,
// and commit it (rank 0) or report the replica's hash (the others, every hash_every steps).
func (r *run) train(ctx context.Context) (Outcome, error) {
	m, t, v := r.m, &r.tr, r.view
	rc := m.rc
	s := m.state.Step()
	if s >= rc.Run.Steps {
		return LastStep, nil
	}
	if o, ok := r.interrupted(ctx); ok {
		return o, nil
	}
	m.stats.Reset()
	if err := m.trainer.Compute(uint64(s), t.lo, t.hi, m.grad, m.stats); err != nil {
		return Fault, err
	}
	m.stats.Put(m.statsBuf)
	res, err := r.allReduce(s)
	if err != nil {
		return r.ringFailed(ctx, s, err)
	}
	if err := m.stats.Get(m.statsBuf); err != nil {
		return Fault, err
	}
	var encoded *coordpb.EncodedGradient
	if r.rank == 0 {
		// The commit carries the sum as the ring encoded it: compressed, and decoding to
		// exactly what the members apply.
		if spans := m.encoded.Spans(); len(spans) > 0 {
			encoded = encodedGradient(&m.encoded, spans)
			m.commit = m.commit[:0]
		} else {
			m.commit = cluster.AppendFloats(m.commit[:0], m.grad)
		}
	}
	if err := m.undo.CopyFrom(m.state); err != nil {
		return Fault, err
	}
	m.undoHeld = true
	B := rc.Train.GlobalBatch
	norm, err := m.state.Apply(m.grad, B)
	if err != nil {
		return Fault, err
	}
	done := m.state.Step()
	var hash []byte
	if done%rc.Cluster.HashEvery == 0 {
		h := m.state.Hash()
		hash = h[:]
	}
	o := Stepped
	if r.rank == 0 {
		var err error
		if o, err = r.commit(ctx, s, encoded, hash); o != Stepped && o != ViewChanged {
			return o, err // not committed: the next view's sync undoes the step
		}
	} else if hash != nil {
		r.reportHash(done, hash)
	}
	r.c.m.steps.Inc()
	r.c.m.step.Set(float64(done))
	info := StepInfo{
		Step: done, Total: rc.Run.Steps, Loss: m.stats.Mean(), PerLevel: m.stats.PerLevel(), GradNorm: norm, Workers: len(v.Members),
		SamplesPerSec: float64((done-t.start)*int64(B)) / time.Since(t.t0).Seconds(),
	}
	if r.c.cfg.OnStep != nil {
		r.c.cfg.OnStep(info)
	}
	if done%rc.Run.LogEvery == 0 || done == rc.Run.Steps {
		t.log.Info("step", "step", done, "of", rc.Run.Steps, "loss", info.Loss, "grad_norm", norm,
			"samples_per_sec", info.SamplesPerSec, "allreduce_seconds", res.Duration.Seconds())
	}
	if o == Stepped && done == rc.Run.Steps {
		o = LastStep
	}
	return o, nil
}

// allReduce sums the step's gradient and, beside it, its loss statistics around the ring.
func (r *run) allReduce(s int64) (allreduce.Result, error) {
	m, ctx := r.m, r.sess.ctx
	op := allreduce.Op{Run: m.rc.Run.ID, Epoch: r.view.Epoch, Step: uint64(s), Members: r.tr.members, Codec: m.codec, Residual: m.resid}
	// The loss statistics go exactly: a lossy codec would corrupt the sample counts and,
	// through error feedback, carry one step's losses into the next.
	statsOp := op
	statsOp.Run, statsOp.Codec, statsOp.Residual = m.rc.Run.ID+"/loss", allreduce.Codec{}, nil
	statsErr := make(chan error, 1)
	go func() {
		_, err := m.ring.AllReduce(ctx, statsOp, m.statsBuf)
		statsErr <- err
	}()
	if r.rank == 0 {
		op.Encoded = &m.encoded
	}
	res, err := m.ring.AllReduce(ctx, op, m.grad)
	if serr := <-statsErr; err == nil {
		err = serr
	}
	return res, err
}

// ringFailed says how a failed all-reduce of step s ends the view's training.
func (r *run) ringFailed(ctx context.Context, s int64, err error) (Outcome, error) {
	if o, ok := r.interrupted(ctx); ok {
		return o, err
	}
	var pe *allreduce.PeerError
	switch {
	case errors.Is(err, allreduce.ErrAborted):
		return ViewChanged, err // a neighbour has seen a newer view; it follows
	case errors.As(err, &pe):
		r.reportFailure(pe.Peer, err)
		return PeerFailed, fmt.Errorf("worker: all-reduce of step %d: %w", s, err)
	}
	return RingFailed, fmt.Errorf("worker: all-reduce of step %d: %w", s, err)
}

// commit sends rank 0's gradient of step s to the coordinator: Stepped if it is committed
// in this view, ViewChanged if committed and a newer view follows, else why not.
func (r *run) commit(ctx context.Context, s int64, encoded *coordpb.EncodedGradient, hash []byte) (Outcome, error) {
	m := r.m
	cctx, cancel := context.WithTimeout(r.sess.ctx, 30*time.Second)
	defer cancel()
	resp, err := r.c.client.Commit(cctx, &coordpb.CommitRequest{
		WorkerId: r.id, Epoch: r.view.Epoch, Step: s, Gradient: m.commit, Encoded: encoded,
		LossStats: append([]float32(nil), m.statsBuf...), StateHash: hash,
	})
	if err != nil {
		err = fmt.Errorf("worker: commit of step %d: %s", s, status.Convert(err).Message())
		if o, ok := r.interrupted(ctx); ok {
			return o, err
		}
		return CommitRefused, err
	}
	if resp.Epoch != r.view.Epoch {
		return ViewChanged, nil
	}
	return Stepped, nil
}

// reportHash reports the replica's hash after step done (best effort: the coordinator
// checks the committer's hash too).
func (r *run) reportHash(done int64, hash []byte) {
	ctx, cancel := context.WithTimeout(r.sess.ctx, 5*time.Second)
	defer cancel()
	resp, err := r.c.client.ReportHash(ctx, &coordpb.HashReport{WorkerId: r.id, Epoch: r.view.Epoch, Step: done, Hash: hash})
	switch {
	case err != nil:
		r.tr.log.Debug("could not report the replica's hash", "step", done, "err", err)
	case resp.Mismatch:
		r.tr.log.Warn("replica diverged from the canonical state; a resync view follows", "step", done)
	}
}

// reportFailure names a failed neighbour to the coordinator (best effort: the coordinator
// also learns of deaths from gossip and the views streams).
func (r *run) reportFailure(peer string, cause error) {
	ctx, cancel := context.WithTimeout(r.sess.ctx, 5*time.Second)
	defer cancel()
	if _, err := r.c.client.ReportFailure(ctx, &coordpb.FailureReport{WorkerId: r.id, Epoch: r.view.Epoch, Peer: peer, Reason: cause.Error()}); err != nil {
		r.tr.log.Warn("could not report a failed neighbour", "peer", peer, "err", err)
	}
}

func encodedGradient(e *allreduce.Encoded, spans []allreduce.EncodedSpan) *coordpb.EncodedGradient {
	g := &coordpb.EncodedGradient{Codec: e.Codec.String(), Length: uint64(e.Length), Spans: make([]*coordpb.EncodedSpan, len(spans))}
	for i, sp := range spans {
		g.Spans[i] = &coordpb.EncodedSpan{Offset: uint64(sp.Offset), Count: uint64(sp.Count), Data: sp.Data}
	}
	return g
}
