package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// peer is the long-lived stream to one right-hand neighbour, reopened after a failure.
type peer struct {
	addr string

	sendMu sync.Mutex // one Send at a time

	mu      sync.Mutex // guards the fields below
	stream  Stream
	cancel  context.CancelFunc
	gen     uint64
	readerC chan struct{} // closed when the current stream's reader exits
}

func (r *Ring) peer(addr string) (*peer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("allreduce: %w", ErrClosed)
	}
	if p := r.peers[addr]; p != nil {
		return p, nil
	}
	p := &peer{addr: addr}
	r.peers[addr] = p
	return p, nil
}

// send sends m on the stream to p, opening it if needed. On error the stream is reset.
func (r *Ring) send(p *peer, m *Piece) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	s, gen, err := r.openStream(p)
	if err != nil {
		m.Free()
		return err
	}
	if err := s.Send(m); err != nil {
		p.reset(gen)
		if errors.Is(err, io.EOF) {
			err = errors.New("stream closed by neighbour")
		}
		return err
	}
	return nil
}

func (r *Ring) openStream(p *peer) (Stream, uint64, error) {
	p.mu.Lock()
	if p.stream != nil {
		defer p.mu.Unlock()
		return p.stream, p.gen, nil
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		p.mu.Unlock()
		return nil, 0, fmt.Errorf("allreduce: %w", ErrClosed)
	}
	r.wg.Add(1) // the reader started below
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(r.ctx)
	p.gen++
	gen := p.gen
	p.cancel = cancel // lets reset unblock the connection wait below
	p.mu.Unlock()

	s, err := r.transport.Open(ctx, p.addr)

	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil || p.gen != gen {
		cancel()
		r.wg.Done()
		if err == nil {
			err = errors.New("stream reset while opening")
		}
		return nil, 0, fmt.Errorf("open stream: %w", err)
	}
	p.stream = s
	readerC := make(chan struct{})
	p.readerC = readerC
	go func() {
		defer r.wg.Done()
		defer close(readerC)
		defer cancel()
		r.readRefusals(p, s, gen)
	}()
	return s, gen, nil
}

// reset abandons stream gen (if still current); the next send opens a new one.
func (p *peer) reset(gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen != gen {
		return
	}
	if p.cancel != nil {
		p.cancel()
	}
	p.stream, p.cancel = nil, nil
	p.gen++
}

func (p *peer) current() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// readRefusals reads what the neighbour sends back on stream gen until it ends.
func (r *Ring) readRefusals(p *peer, s Stream, gen uint64) {
	for {
		ref, err := s.Recv()
		if err != nil {
			p.reset(gen)
			r.rightEnded(p.addr, err)
			return
		}
		r.refused(p.addr, ref)
	}
}

// rightEnded fails the operations that still have pieces to send to addr.
func (r *Ring) rightEnded(addr string, err error) {
	if errors.Is(err, io.EOF) {
		err = errors.New("stream closed by neighbour")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range r.ops {
		if st.active && st.right == addr && st.sendsLeft > 0 {
			r.failLocked(st, &PeerError{Peer: addr, Err: fmt.Errorf("stream to neighbour ended: %w", err)})
		}
	}
}

func (r *Ring) refused(addr string, ref *ringpb.Refusal) {
	k := opKey{ref.Run, ref.Epoch, ref.Step}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.ops[k]
	if st == nil || !st.active || st.right != addr {
		return
	}
	var err error
	switch ref.Code {
	case ringpb.RefusalCode_REFUSAL_STALE_EPOCH, ringpb.RefusalCode_REFUSAL_ABORTED:
		err = fmt.Errorf("allreduce: op %v: %s is at epoch %d: %w", k, addr, ref.CurrentEpoch, ErrAborted)
	case ringpb.RefusalCode_REFUSAL_PEER_FAILED:
		// Blame whom the neighbour blames, so that a failure relayed around the ring names
		// the member at its origin.
		err = &PeerError{Peer: ref.Culprit, Err: fmt.Errorf("op %v failed at %s: %s", k, addr, ref.Reason)}
	default:
		err = &PeerError{Peer: addr, Err: fmt.Errorf("refused op %v: %s", k, ref.Reason)}
	}
	r.failLocked(st, err)
}

// shutdown closes the send side, gives the neighbour up to d to take what is in flight,
// then ends the stream.
func (p *peer) shutdown(d time.Duration) {
	p.sendMu.Lock() // no Send in progress; operations were failed, so their sends are done
	defer p.sendMu.Unlock()
	p.mu.Lock()
	s, readerC := p.stream, p.readerC
	p.mu.Unlock()
	if s == nil {
		return
	}
	if s.CloseSend() == nil {
		t := time.NewTimer(d)
		select {
		case <-readerC:
		case <-t.C:
		}
		t.Stop()
	}
	p.reset(p.current())
}
