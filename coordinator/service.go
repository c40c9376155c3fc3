package coordinator

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/coordinator/membership"
	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// refusalCodes maps the core's refusals to gRPC status codes; a worker branches on
// them (a refused join ends it, a completed run ends it well, the rest retry).
var refusalCodes = map[membership.Reason]codes.Code{
	membership.RefusedVersion: codes.FailedPrecondition,
	membership.RefusedRun:     codes.PermissionDenied,
	membership.BadRequest:     codes.InvalidArgument,
	membership.RunComplete:    codes.FailedPrecondition,
	membership.RunFull:        codes.ResourceExhausted,
	membership.UnknownWorker:  codes.NotFound,
	membership.StaleEpoch:     codes.Aborted,
	membership.NotRank0:       codes.PermissionDenied,
	membership.WrongStep:      codes.FailedPrecondition,
	membership.Waiting:        codes.FailedPrecondition,
	membership.RunFailed:      codes.Unavailable,
	membership.ApplyFailed:    codes.Internal,
	membership.Stopping:       codes.Unavailable,
}

func refusalStatus(err error) error {
	c, ok := refusalCodes[membership.ReasonOf(err)]
	if !ok {
		c = codes.Internal
	}
	return status.Error(c, err.Error())
}

// joinRefusals name refused joins in the log.
var joinRefusals = map[membership.Reason]string{
	membership.RefusedVersion: "refused join: version",
	membership.RefusedRun:     "refused join: run id",
	membership.RunFull:        "refused join: run full",
}

// Join admits a worker or refuses it with a status that says why.
func (s *Server) Join(ctx context.Context, req *coordpb.JoinRequest) (*coordpb.JoinResponse, error) {
	var id string
	var err error
	s.step(func(c *membership.Core) {
		id, err = c.Join(membership.Join{Version: req.Version, RunID: req.RunId, Name: req.Name, RingAddr: req.RingAddr, LastEpoch: req.LastEpoch})
	})
	if err != nil {
		r := membership.ReasonOf(err)
		if msg, ok := joinRefusals[r]; ok {
			s.log.Warn(msg, "worker", req.Name, "worker_version", req.Version, "worker_run", req.RunId, "err", err)
		}
		if r == membership.RunComplete {
			// The worker ends well on this code: there is nothing left to do.
			return nil, status.Error(codes.OutOfRange, err.Error())
		}
		return nil, refusalStatus(err)
	}
	s.log.Info("worker joined", "worker", id, "ring_addr", req.RingAddr)
	return &coordpb.JoinResponse{Config: s.cfg.Run.JSON(), WorkerId: id, GossipAddr: s.gossipAddr, Version: s.cfg.Version}, nil
}

// Views streams ring views to a worker; its end removes the worker.
func (s *Server) Views(req *coordpb.ViewsRequest, stream coordpb.Coordinator_ViewsServer) error {
	ctx := stream.Context()
	id := req.WorkerId
	vs := &viewStream{gone: make(chan struct{})}
	var err error
	s.step(func(c *membership.Core) {
		if err = c.Attach(id); err == nil {
			s.streams[id] = vs
			s.streamsChangedLocked(+1)
		}
	})
	if err != nil {
		return refusalStatus(err)
	}
	defer s.step(func(c *membership.Core) {
		delete(s.streams, id)
		s.streamsChangedLocked(-1)
		c.Detach(id)
	})
	var sent uint64
	first := true
	for {
		s.mu.Lock()
		v, ch := s.view, s.viewCh
		s.mu.Unlock()
		select {
		case <-vs.gone:
			return status.Errorf(codes.FailedPrecondition, "removed from the ring: %s", vs.why)
		default:
		}
		if first || v.Epoch != sent || v.Done {
			if err := stream.Send(v); err != nil {
				return err
			}
			first, sent = false, v.Epoch
			if v.Done {
				return nil
			}
		}
		select {
		case <-ch:
		case <-vs.gone:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closed:
			return status.Error(codes.Unavailable, "coordinator shutting down")
		}
	}
}

func (s *Server) streamsChangedLocked(d int) {
	s.nstreams += d
	close(s.streamsCh)
	s.streamsCh = make(chan struct{})
}

// State streams the canonical state.
func (s *Server) State(req *coordpb.StateRequest, stream coordpb.Coordinator_StateServer) error {
	s.mu.Lock()
	if !s.core.Joined(req.WorkerId) {
		s.mu.Unlock()
		return status.Errorf(codes.NotFound, "unknown worker %q: join first", req.WorkerId)
	}
	msgs := model.EncodeStateStream(s.core.State(), s.core.Hash(), 0)
	s.mu.Unlock()
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	s.m.stateDownloads.Inc()
	return nil
}

// readGradient fills s.grad from a commit, raw or in the ring's encoding.
func (s *Server) readGradient(req *coordpb.CommitRequest) error {
	e := req.Encoded
	if e == nil {
		s.m.commitBytes.Add(float64(len(req.Gradient)))
		return cluster.ReadFloats(s.grad, req.Gradient)
	}
	if e.Codec != s.codec.String() || e.Length != uint64(len(s.grad)) {
		return fmt.Errorf("encoded as %s with %d values, want %s with %d", e.Codec, e.Length, s.codec, len(s.grad))
	}
	spans := make([]allreduce.EncodedSpan, len(e.Spans))
	for i, sp := range e.Spans {
		if sp.Offset > e.Length || sp.Count > e.Length {
			return fmt.Errorf("span of %d values at %d in %d", sp.Count, sp.Offset, e.Length)
		}
		spans[i] = allreduce.EncodedSpan{Offset: int(sp.Offset), Count: int(sp.Count), Data: sp.Data}
		s.m.commitBytes.Add(float64(len(sp.Data)))
	}
	return s.dec.DecodeSpans(s.grad, spans)
}

// Commit applies rank 0's reduced gradient of the next step to the canonical state.
// The gradient is decoded before the protocol lock is taken; the reply waits (with no
// lock held) while the checkpoint backlog is full, and for the final checkpoint.
func (s *Server) Commit(ctx context.Context, req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
	s.commitMu.Lock()
	if err := s.readGradient(req); err != nil {
		s.commitMu.Unlock()
		return nil, status.Errorf(codes.InvalidArgument, "gradient: %v", err)
	}
	var rep membership.CommitReply
	var err error
	rd := s.step(func(c *membership.Core) {
		rep, err = c.Commit(membership.Commit{
			Worker: req.WorkerId, Epoch: req.Epoch, Step: req.Step, Gradient: s.grad, LossStats: req.LossStats, StateHash: req.StateHash,
		})
	})
	s.commitMu.Unlock()
	if err != nil {
		return nil, refusalStatus(err)
	}
	for _, ck := range rd.Checkpoints {
		if ck.Final {
			return s.awaitFinal(ctx, rep)
		}
	}
	if len(rd.Checkpoints) > 0 {
		if err := s.waitRoom(ctx); err != nil {
			return nil, err
		}
		// Views may have changed meanwhile: the current epoch tells rank 0.
		rep.Epoch = s.Epoch()
	}
	return &coordpb.CommitResponse{CommittedStep: rep.Step, Epoch: rep.Epoch}, nil
}

// awaitFinal answers the final commit once its checkpoint is written: without it
// the run has not ended, and a restart resumes from the newest checkpoint.
func (s *Server) awaitFinal(ctx context.Context, rep membership.CommitReply) (*coordpb.CommitResponse, error) {
	select {
	case <-s.finished:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.closed:
	}
	s.mu.Lock()
	runErr, done := s.runErr, s.core.Status().Done
	s.mu.Unlock()
	switch {
	case runErr != nil:
		return nil, status.Error(codes.Internal, runErr.Error())
	case !done:
		return nil, status.Error(codes.Unavailable, "coordinator shutting down before the final checkpoint was written")
	}
	return &coordpb.CommitResponse{CommittedStep: rep.Step, Epoch: rep.Epoch}, nil
}

// ReportHash checks a replica's state hash against the canonical state's.
func (s *Server) ReportHash(ctx context.Context, req *coordpb.HashReport) (*coordpb.HashResponse, error) {
	if len(req.Hash) != 32 {
		return nil, status.Error(codes.InvalidArgument, "hash must have 32 bytes")
	}
	r := membership.HashReport{Worker: req.WorkerId, Epoch: req.Epoch, Step: req.Step}
	copy(r.Hash[:], req.Hash)
	var mismatch bool
	s.step(func(c *membership.Core) { mismatch = c.ReportHash(r) })
	return &coordpb.HashResponse{Mismatch: mismatch}, nil
}

// ReportFailure removes the neighbour a ring member blames for a failed all-reduce.
func (s *Server) ReportFailure(ctx context.Context, req *coordpb.FailureReport) (*coordpb.FailureResponse, error) {
	var err error
	rd := s.step(func(c *membership.Core) {
		err = c.ReportFailure(membership.FailureReport{Worker: req.WorkerId, Epoch: req.Epoch, Peer: req.Peer, Reason: req.Reason})
	})
	if err != nil {
		return nil, refusalStatus(err)
	}
	if len(rd.Removed) > 0 {
		s.log.Warn("neighbour failure reported", "reporter", req.WorkerId, "peer", req.Peer, "reason", req.Reason, "epoch", req.Epoch)
	}
	return &coordpb.FailureResponse{}, nil
}

// Status describes the run.
func (s *Server) Status(ctx context.Context, req *coordpb.StatusRequest) (*coordpb.StatusResponse, error) {
	s.mu.Lock()
	st, last := s.core.Status(), s.lastCkpt
	s.mu.Unlock()
	r := &coordpb.StatusResponse{
		RunId: s.cfg.Run.Run.ID, Step: st.Step, TotalSteps: st.Total, Epoch: st.Epoch, Done: st.Done,
		Loss: st.Loss, Waiting: st.Waiting, MinWorkers: int32(s.cfg.Run.Cluster.MinWorkers), LastCheckpoint: last,
		FirstStep: st.FirstStep, Commits: st.Commits, SamplesPerSec: s.m.samplesPerSecValue(),
	}
	for _, m := range st.Members {
		r.Members = append(r.Members, &coordpb.Member{WorkerId: m.ID, RingAddr: m.RingAddr})
	}
	return r, nil
}
