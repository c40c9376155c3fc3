package coordinator

import (
	"strconv"
	"time"

	"github.com/ncsn/ncsn/coordinator/membership"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// step runs one event through the core under the protocol lock and carries out
// what the core asks for: what must change with the protocol state under the
// lock (publishLocked), the logs, metrics and callbacks after it (report).
func (s *Server) step(event func(*membership.Core)) membership.Ready {
	s.mu.Lock()
	event(s.core)
	rd := s.core.Ready()
	s.publishLocked(&rd)
	s.mu.Unlock()
	s.report(&rd)
	return rd
}

// publishLocked makes the core's effects visible: the view to the streams, the
// end of removed workers' streams, checkpoints to the writer, the end of the run.
// It does no I/O.
func (s *Server) publishLocked(rd *membership.Ready) {
	for _, r := range rd.Removed {
		if vs := s.streams[r.ID]; vs != nil {
			vs.why = r.Reason
			close(vs.gone)
		}
	}
	if n := len(rd.Committed); n > 0 && s.cfg.Snapshots != nil {
		s.cfg.Snapshots.Offer(rd.Committed[n-1].Step, s.core.State().SampleWeights())
	}
	if n := len(rd.Views); n > 0 {
		s.view = wireView(rd.Views[n-1])
		close(s.viewCh)
		s.viewCh = make(chan struct{})
	}
	for _, ck := range rd.Checkpoints {
		s.ckq.push(ck)
	}
	if rd.Done {
		close(s.doneCh)
		close(s.finished)
	}
	if rd.Failed != nil {
		s.runErr = rd.Failed
		close(s.finished)
		s.close()
	}
}

// report logs the core's effects and updates metrics, with no lock held.
// Commits come only from Commit, under commitMu, which orders the OnCommit
// calls and guards the rate meter.
func (s *Server) report(rd *membership.Ready) {
	for _, r := range rd.Removed {
		s.log.Info("worker removed", "worker", r.ID, "reason", r.Reason, "in_ring", r.InRing)
	}
	for _, r := range rd.Resyncs {
		s.m.hashMismatches.Inc()
		s.log.Warn("replica diverged from the canonical state; resync", "worker", r.Worker, "step", r.Step)
	}
	for _, v := range rd.Views {
		if !v.Done {
			s.m.epoch.Set(float64(v.Epoch))
			s.m.members.Set(float64(len(v.Members)))
		}
		s.log.Info("view", "epoch", v.Epoch, "members", len(v.Members), "step", v.CommittedStep, "waiting", v.Waiting, "reason", v.Reason)
	}
	for _, c := range rd.Committed {
		s.m.steps.Inc()
		s.m.step.Set(float64(c.Step))
		s.m.loss.Set(c.Loss)
		for i, l := range c.PerLevel {
			s.m.lossLevel.WithLabelValues(strconv.Itoa(i)).Set(l)
		}
		n, secs := s.rate.tick(time.Now())
		rate := 0.0
		if secs > 0 {
			rate = float64(n*s.batch) / secs
		}
		s.m.samplesPerSec.Set(rate)
		log := s.log.With("step", c.Step, "epoch", c.Epoch)
		log.Debug("commit", "workers", c.Workers)
		if c.Step%s.cfg.Run.Run.LogEvery == 0 || c.Step == s.total {
			log.Info("step", "of", s.total, "loss", c.Loss, "workers", c.Workers, "samples_per_sec", rate)
		}
		if s.cfg.OnCommit != nil {
			s.cfg.OnCommit(Progress{Step: c.Step, Total: s.total, Loss: c.Loss, PerLevel: c.PerLevel, Workers: c.Workers, Epoch: c.Epoch, SamplesPerSec: rate})
		}
	}
	if rd.Done {
		s.mu.Lock()
		st, ckpt := s.core.Status(), s.lastCkpt
		s.mu.Unlock()
		s.log.Info("run complete", "commits", st.Commits, "first_step", st.FirstStep, "checkpoint", ckpt)
	}
	if rd.Failed != nil {
		s.log.Error("run failed; a restarted coordinator resumes from the newest checkpoint", "err", rd.Failed)
	}
}

// wireView is v as the Views stream sends it.
func wireView(v membership.View) *coordpb.View {
	w := &coordpb.View{Epoch: v.Epoch, CommittedStep: v.CommittedStep, Waiting: v.Waiting, Done: v.Done}
	if v.Epoch > 0 && !v.Done {
		w.StateHash = append([]byte(nil), v.StateHash[:]...)
	}
	for _, m := range v.Members {
		w.Members = append(w.Members, &coordpb.Member{WorkerId: m.ID, RingAddr: m.RingAddr})
	}
	return w
}
