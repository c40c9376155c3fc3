package coordinator

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/coordinator/membership"
	"github.com/ncsn/ncsn/model"
)

// maxCheckpointBacklog bounds the checkpoints the core has asked for and the
// disk has not finished: the one being written and one behind it. A commit that
// asks for one more waits (holding no lock) until the oldest is written, so a
// slow disk slows training only once it is a whole checkpoint interval behind,
// and memory holds at most three copies of the state besides the canonical one.
const maxCheckpointBacklog = 2

// checkpointQueue holds the checkpoints asked for, oldest first, and the one
// being written. Its lock is a leaf: nothing is called while holding it.
type checkpointQueue struct {
	mu       sync.Mutex
	pending  []*membership.Checkpoint
	inFlight *membership.Checkpoint
	grew     chan struct{} // capacity 1: a checkpoint was pushed
	shrunk   chan struct{} // closed and replaced when one is taken off
}

func newCheckpointQueue() *checkpointQueue {
	return &checkpointQueue{grew: make(chan struct{}, 1), shrunk: make(chan struct{})}
}

func (q *checkpointQueue) push(ck *membership.Checkpoint) {
	q.mu.Lock()
	q.pending = append(q.pending, ck)
	q.mu.Unlock()
	select {
	case q.grew <- struct{}{}:
	default:
	}
}

// take moves the oldest pending checkpoint in flight; nil if there is none.
func (q *checkpointQueue) take() *membership.Checkpoint {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return nil
	}
	q.inFlight = q.pending[0]
	q.pending = q.pending[1:]
	return q.inFlight
}

// written ends the checkpoint in flight.
func (q *checkpointQueue) written() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inFlight = nil
	close(q.shrunk)
	q.shrunk = make(chan struct{})
}

// drop forgets the pending checkpoints (a crash loses them).
func (q *checkpointQueue) drop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = nil
	close(q.shrunk)
	q.shrunk = make(chan struct{})
}

func (q *checkpointQueue) backlog() (int, chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.pending)
	if q.inFlight != nil {
		n++
	}
	return n, q.shrunk
}

// waitRoom waits until the backlog is within maxCheckpointBacklog.
func (s *Server) waitRoom(ctx context.Context) error {
	for {
		n, ch := s.ckq.backlog()
		if n <= maxCheckpointBacklog {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.closed:
			return status.Error(codes.Unavailable, "coordinator shutting down")
		}
	}
}

// writeCheckpoints is Run's writer goroutine: it writes the checkpoints the core
// asks for, oldest first, with no lock held, and hands each back to the core.
// After Close it writes what is pending and returns; after Kill it returns once
// the write in progress ends.
func (s *Server) writeCheckpoints() {
	for {
		ck := s.ckq.take()
		if ck == nil {
			select {
			case <-s.ckq.grew:
				continue
			case <-s.stopped:
				if ck = s.ckq.take(); ck == nil {
					return
				}
			}
		}
		if s.killed.Load() {
			s.ckq.written()
			return
		}
		s.m.ckptBacklog.Set(float64(s.backlogLen()))
		t0 := time.Now()
		path, err := s.ckpt.Save(model.NewRunCheckpoint(s.layout, ck.State, s.run))
		secs := time.Since(t0).Seconds()
		if s.killed.Load() {
			s.ckq.written()
			return
		}
		if err != nil {
			s.m.ckptFailures.Inc()
			if !ck.Final {
				s.log.Error("checkpoint failed; the next one will be tried", "step", ck.Step, "err", err)
			}
		} else {
			s.m.ckptSeconds.Observe(secs)
			s.log.Info("checkpoint", "path", path, "step", ck.Step, "seconds", secs)
		}
		s.step(func(c *membership.Core) {
			if err == nil {
				s.lastCkpt = path
			}
			c.CheckpointWritten(ck, err)
		})
		s.ckq.written()
		s.m.ckptBacklog.Set(float64(s.backlogLen()))
	}
}

func (s *Server) backlogLen() int {
	n, _ := s.ckq.backlog()
	return n
}
