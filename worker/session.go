package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// viewBox holds the newest view; ch is closed when it changes.
type viewBox struct {
	mu sync.Mutex
	v  *coordpb.View
	ch chan struct{}
}

// offer stores v if it supersedes the view held, and tells whether it did.
func (b *viewBox) offer(v *coordpb.View) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !supersedes(v, b.v) {
		return false
	}
	b.v = v
	close(b.ch)
	b.ch = make(chan struct{})
	return true
}

func (b *viewBox) get() (*coordpb.View, chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.v, b.ch
}

// session is one join's views stream. Its receiver stores each view in box and aborts the
// ring's operations of older epochs; when the stream fails, ctx is cancelled (ending the
// session's calls); when it ends, with the done view or not, ended is closed.
type session struct {
	ctx    context.Context // the session's calls end with it
	cancel context.CancelFunc
	box    viewBox
	ended  chan struct{}
	err    error // why the stream ended; read after ended
}

// openSession opens the views stream of worker id and starts its receiver.
func openSession(ctx context.Context, client coordpb.CoordinatorClient, id string, ring *allreduce.Ring, log *slog.Logger) (*session, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := client.Views(sctx, &coordpb.ViewsRequest{WorkerId: id})
	if err != nil {
		cancel()
		return nil, err
	}
	s := &session{ctx: sctx, cancel: cancel, box: viewBox{ch: make(chan struct{})}, ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		for {
			v, err := stream.Recv()
			if err != nil {
				s.err = err
				cancel() // the coordinator is gone: so are the session's calls
				return
			}
			if !s.box.offer(v) {
				log.Warn("ignored a stale view", "epoch", v.Epoch)
				continue
			}
			if v.Epoch > 0 {
				ring.Abort(v.Epoch) // ends the in-flight all-reduce of an older view
			}
			if v.Done {
				// The stream ends, but calls in flight (rank 0's last commit) may finish.
				s.err = errors.New("the run is complete")
				return
			}
		}
	}()
	return s, nil
}

// close ends the stream and waits for the receiver.
func (s *session) close() {
	s.cancel()
	<-s.ended
}

// lost tells whether the stream has ended.
func (s *session) lost() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}
