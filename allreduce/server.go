package allreduce

import (
	"errors"
	"fmt"
	"io"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// Accept serves a stream from the left-hand neighbour from (its Config.Self, or "" if the
// transport cannot tell): it queues the pieces for their operations and answers refusals. It
// returns when the stream ends (nil after the sender's CloseSend) or the Ring is closed; the
// transport must then end the stream, which a receive still blocked waits for.
func (r *Ring) Accept(from string, s Inbound) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fmt.Errorf("allreduce: %w", ErrClosed)
	}
	// The receive loop runs apart so that Close can end this call while Recv blocks.
	r.wg.Add(1)
	r.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer r.wg.Done()
		done <- r.receive(s, from)
	}()
	select {
	case err := <-done:
		return err
	case <-r.closing:
		return fmt.Errorf("allreduce: %w", ErrClosed)
	}
}

func (r *Ring) receive(s Inbound, from string) error {
	r.mu.Lock()
	r.streams++
	via := r.streams
	r.mu.Unlock()
	for {
		m, err := s.Recv()
		if err != nil {
			r.leftEnded(via, from, err)
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		k := opKey{m.Run, m.Epoch, m.Step}
		ref := r.deliver(k, m, via)
		if ref == nil {
			continue
		}
		m.Free()
		if err := s.Send(ref); err != nil {
			r.leftEnded(via, from, err)
			return err
		}
	}
}

// deliver queues m for its operation, or returns the refusal to send back.
func (r *Ring) deliver(k opKey, m *Piece, via uint64) *ringpb.Refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.refusalLocked(k, ringpb.RefusalCode_REFUSAL_UNAVAILABLE, "", "ring closed")
	}
	if k.epoch < r.floor {
		return r.refusalLocked(k, ringpb.RefusalCode_REFUSAL_STALE_EPOCH, "", fmt.Sprintf("epoch %d is older than %d", k.epoch, r.floor))
	}
	// A neighbour on a newer epoch means the ring has moved on: older operations cannot finish.
	r.raiseFloorLocked(k.epoch)
	st := r.ops[k]
	if st == nil {
		st = newOpState(k)
		r.ops[k] = st
	}
	if st.err == nil && !st.active && r.pendingBytes+m.payloadLen() > r.cfg.MaxPendingBytes {
		r.failLocked(st, fmt.Errorf("allreduce: op %v: more than %d bytes pending before it started", k, r.cfg.MaxPendingBytes))
	}
	if st.err != nil {
		var pe *PeerError
		switch {
		case errors.Is(st.err, ErrAborted):
			return r.refusalLocked(k, ringpb.RefusalCode_REFUSAL_ABORTED, "", st.err.Error())
		case errors.As(st.err, &pe):
			return r.refusalLocked(k, ringpb.RefusalCode_REFUSAL_PEER_FAILED, pe.Peer, st.err.Error())
		default:
			return r.refusalLocked(k, ringpb.RefusalCode_REFUSAL_UNAVAILABLE, "", st.err.Error())
		}
	}
	if !st.active {
		r.pendingBytes += m.payloadLen()
	}
	st.via = via
	st.items = append(st.items, item{m: m})
	st.bytes += m.payloadLen()
	st.signal()
	return nil
}

// maxReason bounds the text of a refusal; failures relayed around a ring nest their reasons.
const maxReason = 400

func (r *Ring) refusalLocked(k opKey, code ringpb.RefusalCode, culprit, reason string) *ringpb.Refusal {
	r.m.refused.WithLabelValues(code.String()).Inc()
	if len(reason) > maxReason {
		reason = reason[:maxReason] + "…"
	}
	return &ringpb.Refusal{Run: k.run, Epoch: k.epoch, Step: k.step, Code: code, CurrentEpoch: r.floor, Culprit: culprit, Reason: reason}
}

// leftEnded tells the operations fed by a stream that it ended; each fails if it still
// expects pieces once it has consumed those already queued.
func (r *Ring) leftEnded(via uint64, from string, err error) {
	if err == nil || errors.Is(err, io.EOF) {
		err = errors.New("stream closed")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range r.ops {
		if st.err == nil && (st.via == via || st.active && from != "" && st.left == from) {
			st.items = append(st.items, item{eof: err})
			st.signal()
		}
	}
}
