package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// Join admits a worker or refuses it with a status that says why.
func (s *Server) Join(ctx context.Context, req *coordpb.JoinRequest) (*coordpb.JoinResponse, error) {
	rc := s.cfg.Run
	if req.Version != s.cfg.Version {
		s.log.Warn("refused join: version", "worker", req.Name, "worker_version", req.Version, "version", s.cfg.Version)
		return nil, status.Errorf(codes.FailedPrecondition, "version mismatch: worker is %q, coordinator is %q; run the same ncsn build everywhere", req.Version, s.cfg.Version)
	}
	if req.RunId != "" && req.RunId != rc.Run.ID {
		s.log.Warn("refused join: run id", "worker", req.Name, "worker_run", req.RunId)
		return nil, status.Errorf(codes.PermissionDenied, "wrong run: worker asks for run %q, this coordinator runs %q", req.RunId, rc.Run.ID)
	}
	if req.RingAddr == "" || req.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "join needs the worker's name and ring address")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil, status.Error(codes.OutOfRange, "the run is complete")
	}
	limit := rc.Train.GlobalBatch
	if rc.Cluster.MaxWorkers > 0 {
		limit = min(limit, rc.Cluster.MaxWorkers)
	}
	for _, w := range s.workers {
		if w.ringAddr == req.RingAddr {
			// The same address again: a restarted worker whose old self is not gone yet.
			s.removeLocked(w, "replaced by a new worker at the same address")
		}
	}
	if len(s.workers) >= limit {
		s.log.Warn("refused join: run full", "worker", req.Name, "workers", len(s.workers))
		return nil, status.Errorf(codes.ResourceExhausted, "run full: %d workers (max %d for cluster.max_workers / train.global_batch)", len(s.workers), limit)
	}
	s.nextID++
	w := &workerInfo{id: fmt.Sprintf("w%d-%s", s.nextID, req.Name), name: req.Name, ringAddr: req.RingAddr, lastEpoch: req.LastEpoch}
	s.workers[w.id] = w
	s.log.Info("worker joined", "worker", w.id, "ring_addr", w.ringAddr)
	return &coordpb.JoinResponse{Config: rc.JSON(), WorkerId: w.id, GossipAddr: s.gossipAddr, Version: s.cfg.Version}, nil
}

// Views streams ring views to a worker; its end removes the worker.
func (s *Server) Views(req *coordpb.ViewsRequest, stream coordpb.Coordinator_ViewsServer) error {
	ctx := stream.Context()
	s.mu.Lock()
	w := s.workers[req.WorkerId]
	if w == nil || w.streaming {
		s.mu.Unlock()
		return status.Errorf(codes.NotFound, "unknown worker %q: join first", req.WorkerId)
	}
	w.streaming = true
	s.streamsChangedLocked(+1)
	s.admitLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.streamsChangedLocked(-1)
		if w.removed == "" {
			s.removeLocked(w, "views stream ended")
		}
		s.mu.Unlock()
	}()
	var sent uint64
	first := true
	for {
		s.mu.Lock()
		v, ch, removed := s.view, s.viewCh, w.removed
		s.mu.Unlock()
		if removed != "" {
			return status.Errorf(codes.FailedPrecondition, "removed from the ring: %s", removed)
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
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closed:
			return status.Error(codes.Unavailable, "coordinator shutting down")
		}
	}
}

func (s *Server) streamsChangedLocked(d int) {
	s.streams += d
	close(s.streamsCh)
	s.streamsCh = make(chan struct{})
}

// training tells whether a ring is running steps (so joiners wait for a step boundary).
func (s *Server) trainingLocked() bool {
	return !s.done && len(s.members) >= s.cfg.Run.Cluster.MinWorkers
}

// admitLocked adds streaming joiners now if no ring is training, else at the next commit.
func (s *Server) admitLocked() {
	if s.trainingLocked() {
		s.admit = true
		return
	}
	s.newViewLocked("admit")
}

// removeLocked drops a worker; if it was in the ring, a new view follows at once.
func (s *Server) removeLocked(w *workerInfo, why string) {
	if w.removed != "" {
		return
	}
	w.removed = why
	delete(s.workers, w.id)
	inRing := false
	for _, m := range s.members {
		if m == w {
			inRing = true
		}
	}
	s.log.Info("worker removed", "worker", w.id, "reason", why, "in_ring", inRing)
	if inRing {
		s.newViewLocked("remove " + w.id + ": " + why)
	}
	s.notifyLocked()
}

// newViewLocked issues the next view: the ring members that remain plus every streaming
// joiner, at the committed step.
func (s *Server) newViewLocked(reason string) {
	if s.done {
		return
	}
	var members []*workerInfo
	in := map[*workerInfo]bool{}
	for _, m := range s.members {
		if m.removed == "" {
			members = append(members, m)
			in[m] = true
		}
	}
	// Joiners in join order (ids are numbered).
	var joiners []*workerInfo
	for _, w := range s.workers {
		if w.streaming && !in[w] {
			joiners = append(joiners, w)
		}
	}
	sortByID(joiners)
	members = append(members, joiners...)
	epoch := s.epoch + 1
	for _, m := range members {
		epoch = max(epoch, m.lastEpoch+1)
	}
	s.epoch = epoch
	s.members = members
	s.admit = false
	h := s.hashLocked()
	v := &coordpb.View{Epoch: epoch, CommittedStep: s.state.Step(), StateHash: h[:], Waiting: len(members) < s.cfg.Run.Cluster.MinWorkers}
	for _, m := range members {
		v.Members = append(v.Members, &coordpb.Member{WorkerId: m.id, RingAddr: m.ringAddr})
	}
	s.view = v
	s.m.epoch.Set(float64(epoch))
	s.m.members.Set(float64(len(members)))
	s.log.Info("view", "epoch", epoch, "members", len(members), "step", v.CommittedStep, "waiting", v.Waiting, "reason", reason)
	s.notifyLocked()
}

func (s *Server) notifyLocked() {
	close(s.viewCh)
	s.viewCh = make(chan struct{})
}

func sortByID(ws []*workerInfo) {
	num := func(w *workerInfo) int {
		var n int
		fmt.Sscanf(w.id, "w%d-", &n)
		return n
	}
	for i := 1; i < len(ws); i++ {
		for j := i; j > 0 && num(ws[j]) < num(ws[j-1]); j-- {
			ws[j], ws[j-1] = ws[j-1], ws[j]
		}
	}
}

// State streams the canonical state.
func (s *Server) State(req *coordpb.StateRequest, stream coordpb.Coordinator_StateServer) error {
	s.mu.Lock()
	if s.workers[req.WorkerId] == nil {
		s.mu.Unlock()
		return status.Errorf(codes.NotFound, "unknown worker %q: join first", req.WorkerId)
	}
	msgs := model.EncodeStateStream(s.state, s.hashLocked(), 0)
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
func (s *Server) Commit(ctx context.Context, req *coordpb.CommitRequest) (*coordpb.CommitResponse, error) {
	s.mu.Lock()
	resp, progress, err := s.commitLocked(req)
	s.mu.Unlock()
	if progress != nil && s.cfg.OnCommit != nil {
		s.cfg.OnCommit(*progress)
	}
	return resp, err
}

func (s *Server) commitLocked(req *coordpb.CommitRequest) (*coordpb.CommitResponse, *Progress, error) {
	if s.done {
		return nil, nil, status.Error(codes.FailedPrecondition, "the run is complete")
	}
	if req.Epoch != s.epoch {
		return nil, nil, status.Errorf(codes.Aborted, "stale epoch %d: the ring is at epoch %d", req.Epoch, s.epoch)
	}
	if len(s.members) == 0 || s.members[0].id != req.WorkerId {
		return nil, nil, status.Errorf(codes.PermissionDenied, "worker %q is not rank 0 of epoch %d", req.WorkerId, s.epoch)
	}
	step := s.state.Step()
	switch {
	case req.Step < step:
		// A retry of a step already applied in this epoch.
		return &coordpb.CommitResponse{CommittedStep: step, Epoch: s.epoch}, nil, nil
	case req.Step > step:
		return nil, nil, status.Errorf(codes.FailedPrecondition, "commit of step %d, but the committed step is %d", req.Step, step)
	}
	if err := s.readGradient(req); err != nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "gradient: %v", err)
	}
	if err := s.stats.Get(req.LossStats); err != nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "loss stats: %v", err)
	}
	if _, err := s.state.Apply(s.grad, s.batch); err != nil {
		return nil, nil, status.Errorf(codes.Internal, "apply step %d: %v", step, err)
	}
	s.committed = append(s.committed, step)
	now := s.state.Step()
	log := s.log.With("step", now, "epoch", s.epoch)
	s.loss = s.stats.Mean()
	s.m.steps.Inc()
	s.m.step.Set(float64(now))
	s.m.loss.Set(s.loss)
	per := s.stats.PerLevel()
	for i, l := range per {
		s.m.lossLevel.WithLabelValues(strconv.Itoa(i)).Set(l)
	}
	n, secs := s.rate.tick(time.Now())
	rate := 0.0
	if secs > 0 {
		rate = float64(n*s.batch) / secs
	}
	s.m.samplesPerSec.Set(rate)
	every := s.cfg.Run.Cluster.HashEvery
	if now%every == 0 {
		h := s.hashLocked()
		s.hashes[now] = h
		delete(s.hashes, now-3*every)
		if len(req.StateHash) > 0 && string(req.StateHash) != string(h[:]) {
			s.resyncLocked(req.WorkerId, now)
		}
		for _, r := range s.reports[now] {
			if r.hash != h {
				s.resyncLocked(r.worker, now)
			}
		}
		delete(s.reports, now)
	}
	log.Debug("commit", "workers", len(s.members))
	if now%s.cfg.Run.Run.LogEvery == 0 || now == s.total {
		log.Info("step", "of", s.total, "loss", s.loss, "workers", len(s.members), "samples_per_sec", rate)
	}
	if now%s.cfg.Run.Run.CheckpointEvery == 0 || now == s.total {
		if err := s.checkpointLocked(); err != nil {
			if now == s.total {
				// Without the final checkpoint the run has not ended: fail it so that a
				// restart resumes from the newest checkpoint that verifies.
				s.runErr = fmt.Errorf("coordinator: final checkpoint: %w", err)
				s.closeOnce.Do(func() { close(s.closed) })
				return nil, nil, status.Errorf(codes.Internal, "final checkpoint: %v", err)
			}
			log.Error("checkpoint failed; the next one will be tried", "err", err)
		}
	}
	if s.cfg.Snapshots != nil {
		s.cfg.Snapshots.Offer(now, s.state.SampleWeights())
	}
	p := &Progress{Step: now, Total: s.total, Loss: s.loss, PerLevel: per, Workers: len(s.members), Epoch: s.epoch, SamplesPerSec: rate}
	if now == s.total {
		s.done = true
		s.view = &coordpb.View{Epoch: s.epoch + 1, CommittedStep: now, Done: true}
		s.notifyLocked()
		close(s.doneCh)
		log.Info("run complete", "commits", len(s.committed), "first_step", s.firstStep, "checkpoint", s.lastCkpt)
	} else if s.admit {
		s.newViewLocked("admit at step boundary")
	}
	return &coordpb.CommitResponse{CommittedStep: now, Epoch: s.epoch}, p, nil
}

// resyncLocked issues a new view after a replica's hash differed: every worker compares
// its state with the view's hash and the diverged one downloads the canonical state.
func (s *Server) resyncLocked(worker string, step int64) {
	s.m.hashMismatches.Inc()
	s.log.Warn("replica diverged from the canonical state; resync", "worker", worker, "step", step)
	s.newViewLocked("resync " + worker)
}

// ReportHash checks a replica's state hash against the canonical state's.
func (s *Server) ReportHash(ctx context.Context, req *coordpb.HashReport) (*coordpb.HashResponse, error) {
	if len(req.Hash) != 32 {
		return nil, status.Error(codes.InvalidArgument, "hash must have 32 bytes")
	}
	var h [32]byte
	copy(h[:], req.Hash)
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.Epoch != s.epoch || s.workers[req.WorkerId] == nil {
		return &coordpb.HashResponse{}, nil // stale: the view change resynchronises anyway
	}
	if req.Step > s.state.Step() {
		s.reports[req.Step] = append(s.reports[req.Step], hashReport{req.WorkerId, h})
		return &coordpb.HashResponse{}, nil
	}
	want, ok := s.hashes[req.Step]
	if req.Step == s.state.Step() {
		want, ok = s.hashLocked(), true
	}
	if ok && want != h {
		s.resyncLocked(req.WorkerId, req.Step)
		return &coordpb.HashResponse{Mismatch: true}, nil
	}
	return &coordpb.HashResponse{}, nil
}

// ReportFailure removes the neighbour a ring member blames for a failed all-reduce.
func (s *Server) ReportFailure(ctx context.Context, req *coordpb.FailureReport) (*coordpb.FailureResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.Epoch != s.epoch {
		return &coordpb.FailureResponse{}, nil // already handled by a newer view
	}
	reporter := s.workers[req.WorkerId]
	if reporter == nil {
		return nil, status.Errorf(codes.NotFound, "unknown worker %q", req.WorkerId)
	}
	for _, m := range s.members {
		if m.ringAddr == req.Peer && m != reporter {
			s.log.Warn("neighbour failure reported", "reporter", reporter.id, "peer", m.id, "reason", req.Reason, "epoch", req.Epoch)
			s.removeLocked(m, "reported by "+reporter.id+": "+req.Reason)
			return &coordpb.FailureResponse{}, nil
		}
	}
	return &coordpb.FailureResponse{}, nil
}

// Status describes the run.
func (s *Server) Status(ctx context.Context, req *coordpb.StatusRequest) (*coordpb.StatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &coordpb.StatusResponse{
		RunId: s.cfg.Run.Run.ID, Step: s.state.Step(), TotalSteps: s.total, Epoch: s.epoch, Done: s.done,
		Loss: s.loss, Waiting: s.view.Waiting, MinWorkers: int32(s.cfg.Run.Cluster.MinWorkers), LastCheckpoint: s.lastCkpt,
		FirstStep: s.firstStep, Commits: int64(len(s.committed)), SamplesPerSec: s.m.samplesPerSecValue(),
	}
	for _, m := range s.members {
		r.Members = append(r.Members, &coordpb.Member{WorkerId: m.id, RingAddr: m.ringAddr})
	}
	return r, nil
}

// events turns memberlist's membership events into removals.
type events struct{ s *Server }

func (e events) NotifyJoin(n *memberlist.Node) {
	meta, _ := cluster.ParseMeta(n.Meta)
	e.s.log.Debug("gossip join", "node", n.Name, "role", meta.Role, "addr", meta.Addr)
}

func (e events) NotifyLeave(n *memberlist.Node) {
	s := e.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.workers {
		if w.name == n.Name {
			s.removeLocked(w, "gossip: node left or died")
		}
	}
}

func (e events) NotifyUpdate(n *memberlist.Node) {}

var _ = slog.LevelInfo
