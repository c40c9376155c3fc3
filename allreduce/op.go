package allreduce

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/mem"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// AllReduce replaces buf with the element-wise sum of the buffers of all op.Members. Every
// member ends with bitwise identical values. It fails within the operation's timeout: with a
// *PeerError naming the neighbour that died, fell silent, refused or sent garbage; with an error
// wrapping ErrAborted if a newer epoch ended it; with ErrClosed; or with ctx's error. On
// error buf holds unspecified values.
func (r *Ring) AllReduce(ctx context.Context, op Op, buf []float32) (Result, error) {
	start := time.Now()
	res, err := r.allReduce(ctx, op, buf)
	res.Duration = time.Since(start)
	r.m.observe(op.Codec, res, err)
	return res, err
}

func (r *Ring) allReduce(ctx context.Context, op Op, buf []float32) (Result, error) {
	key := opKey{op.Run, op.Epoch, op.Step}
	rank, err := r.validate(op, buf)
	if err != nil {
		return Result{}, err
	}
	if op.Encoded != nil {
		op.Encoded.reset(op.Codec, len(buf))
		if op.Codec == (Codec{}) {
			op.Encoded = nil
		}
	}
	if op.Residual != nil {
		for i, v := range op.Residual {
			buf[i] += v
		}
	}
	n := len(op.Members)
	if n == 1 {
		clear(op.Residual)
		return Result{}, nil
	}
	timeout := op.Timeout
	if timeout == 0 {
		timeout = r.cfg.Timeout
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	opCtx, cancelTimeout := context.WithTimeout(ctx, timeout)
	defer cancelTimeout()

	a := &ringOp{
		r: r, op: op, key: key, buf: buf,
		left:  op.Members[(rank+n-1)%n],
		right: op.Members[(rank+1)%n],
		sched: newSchedule(n, rank, len(buf), r.pieceElems),
	}
	st, err := r.register(a, cancel)
	if err != nil {
		return Result{}, err
	}
	a.st = st
	right, err := r.peer(a.right)
	if err != nil {
		r.finish(st, err)
		return Result{}, err
	}
	a.peer = right
	// A send blocked on a silent neighbour only ends when its stream does. Streams are not
	// reset otherwise: the neighbour would blame this member for a failure that is not its.
	stop := context.AfterFunc(opCtx, func() {
		if a.sending.Load() {
			right.reset(right.current())
		}
	})
	c := r.getCoders(op.Codec)
	a.enc, a.dec = c.enc, c.dec
	err = a.run(opCtx)
	stop()
	r.putCoders(op.Codec, c)
	if err != nil {
		err = r.classify(ctx, opCtx, a, err, timeout)
	}
	r.finish(st, err)
	return a.res, err
}

func (r *Ring) validate(op Op, buf []float32) (int, error) {
	if err := op.Codec.validate(); err != nil {
		return 0, err
	}
	if len(op.Members) == 0 {
		return 0, errors.New("allreduce: no members")
	}
	if op.Residual != nil && len(op.Residual) != len(buf) {
		return 0, fmt.Errorf("allreduce: residual has %d values, buffer %d", len(op.Residual), len(buf))
	}
	rank := -1
	seen := make(map[string]bool, len(op.Members))
	for i, m := range op.Members {
		if seen[m] {
			return 0, fmt.Errorf("allreduce: member %s listed twice", m)
		}
		seen[m] = true
		if m == r.cfg.Self {
			rank = i
		}
	}
	if rank < 0 {
		return 0, fmt.Errorf("allreduce: %s is not among the members", r.cfg.Self)
	}
	return rank, nil
}

// register makes the operation active, adopting pieces that arrived before it.
func (r *Ring) register(a *ringOp, cancel context.CancelCauseFunc) (*opState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := a.key
	if r.closed {
		return nil, fmt.Errorf("allreduce: %w", ErrClosed)
	}
	if k.epoch < r.floor {
		return nil, fmt.Errorf("allreduce: op %v: epoch older than %d: %w", k, r.floor, ErrAborted)
	}
	r.raiseFloorLocked(k.epoch)
	// Older steps of this run and epoch are over: forget their leftovers and tombstones.
	for ok, st := range r.ops {
		if ok.run == k.run && ok.epoch == k.epoch && ok.step < k.step && !st.active {
			r.dropLocked(ok, st)
		}
	}
	st := r.ops[k]
	switch {
	case st == nil:
		st = newOpState(k)
		r.ops[k] = st
	case st.active:
		return nil, fmt.Errorf("allreduce: op %v is already running", k)
	case st.err != nil:
		return nil, fmt.Errorf("allreduce: op %v: %w", k, st.err)
	}
	r.pendingBytes -= st.bytes
	st.active = true
	st.left, st.right = a.left, a.right
	st.sendsLeft = a.sched.sends
	st.cancel = cancel
	return st, nil
}

// finish retires the operation; a failed one stays as a tombstone refusing late pieces.
func (r *Ring) finish(st *opState, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.failLocked(st, err)
		st.active = false
		return
	}
	st.active = false
	r.dropLocked(st.key, st)
}

// classify turns how the operation ended into the error the caller can act on.
func (r *Ring) classify(ctx, opCtx context.Context, a *ringOp, err error, timeout time.Duration) error {
	r.mu.Lock()
	stErr := a.st.err
	r.mu.Unlock()
	switch {
	case stErr != nil:
		return stErr // set by Abort, Close, a refusal or a broken stream
	case ctx.Err() != nil:
		return fmt.Errorf("allreduce: op %v: %w", a.key, context.Cause(ctx))
	case opCtx.Err() != nil:
		peer := a.left
		if a.sending.Load() {
			peer = a.right
		}
		return &PeerError{Peer: peer, Err: fmt.Errorf("op %v: no progress within %v: %w", a.key, timeout, context.DeadlineExceeded)}
	}
	return err
}

// ringOp is one member's run of one operation: the shell that encodes, decodes and sends as
// its schedule says.
type ringOp struct {
	r           *Ring
	op          Op
	key         opKey
	st          *opState
	peer        *peer
	buf         []float32
	left, right string
	sched       *schedule
	enc         *Encoder
	dec         *Decoder

	out Piece // reused: the transport is done with it when Send returns
	res Result
	// sending is set while a send is in progress, which only the stream's end can interrupt.
	sending atomic.Bool
}

func (a *ringOp) residual(lo, hi int) []float32 {
	if a.op.Residual == nil {
		return nil
	}
	return a.op.Residual[lo:hi]
}

func (a *ringOp) run(ctx context.Context) error {
	c := a.sched.start()
	for p := range a.sched.pieces(c) {
		if err := a.encodeSend(ringpb.Phase_PHASE_REDUCE_SCATTER, c, p); err != nil {
			return err
		}
	}
	for !a.sched.done() {
		it, err := a.r.next(ctx, a.st)
		if err != nil {
			return err
		}
		if it.eof != nil {
			return &PeerError{Peer: a.left, Err: fmt.Errorf("op %v: stream from neighbour ended: %w", a.key, it.eof)}
		}
		if err := a.handle(it.m); err != nil {
			return err
		}
	}
	return nil
}

func (a *ringOp) handle(in *Piece) error {
	if h := a.r.testHookPiece; h != nil {
		h(in)
	}
	a.res.WireBytesReceived += int64(in.WireSize())
	c, p := int(in.Chunk), int(in.Index)
	bad := func(format string, args ...any) error {
		in.Free()
		return &PeerError{Peer: a.left, Err: fmt.Errorf("op %v: %w: "+format, append([]any{a.key, ErrCorrupt}, args...)...)}
	}
	switch {
	case in.Codec != a.op.Codec.wireID():
		return bad("codec %d, want %d (%v)", in.Codec, a.op.Codec.wireID(), a.op.Codec)
	case in.Length != uint64(len(a.buf)):
		return bad("buffer of %d values, want %d", in.Length, len(a.buf))
	}
	act, err := a.sched.receive(in.Phase, c, p)
	if err != nil {
		return bad("%v", err)
	}
	lo, hi := a.sched.span(c, p)
	switch act {
	case addForward:
		if a.op.Codec == (Codec{}) {
			// Raw float32 going on round the ring: the partial sum is written straight into
			// the outgoing buffer. buf keeps its stale values; the all-gather overwrites them.
			if n := in.payloadLen(); n != 4*(hi-lo) {
				return bad("reduce-scatter piece %d of chunk %d: %d bytes for %d values", p, c, n, hi-lo)
			}
			b := payloadPool.Get(4 * (hi - lo))
			floatRuns(in.Payload, func(i int, y []byte) {
				sumInto((*b)[4*i:], a.buf[lo+i:lo+i+len(y)/4], y)
			})
			in.Free()
			return a.send(ringpb.Phase_PHASE_REDUCE_SCATTER, c, p, mem.BufferSlice{mem.NewBuffer(b, payloadPool)})
		}
		if err := a.dec.decodeSegs(a.buf[lo:hi], in, true); err != nil {
			return bad("reduce-scatter piece %d of chunk %d: %v", p, c, err)
		}
		in.Free()
		return a.encodeSend(ringpb.Phase_PHASE_REDUCE_SCATTER, c, p)
	case addComplete:
		if err := a.dec.decodeSegs(a.buf[lo:hi], in, true); err != nil {
			return bad("reduce-scatter piece %d of chunk %d: %v", p, c, err)
		}
		in.Free()
		// The sum is complete: every member, this one included, takes the decoded encoding.
		return a.encodeSend(ringpb.Phase_PHASE_ALL_GATHER, c, p)
	default: // store, storeForward
		if err := a.dec.decodeSegs(a.buf[lo:hi], in, false); err != nil {
			return bad("all-gather piece %d of chunk %d: %v", p, c, err)
		}
		if a.op.Encoded != nil {
			a.op.Encoded.addSegs(lo, hi-lo, in.Payload)
		}
		if act == store {
			in.Free()
			return nil
		}
		// Forwarded as received: the bytes the owner encoded go all the way round.
		return a.send(ringpb.Phase_PHASE_ALL_GATHER, c, p, in.forward())
	}
}

// encodeSend encodes piece p of chunk c and sends it; in the all-gather phase (this member
// owns c) the buffer is replaced by the decoded encoding first.
func (a *ringOp) encodeSend(phase ringpb.Phase, c, p int) error {
	lo, hi := a.sched.span(c, p)
	if a.op.Codec == (Codec{}) && a.r.inPlace && littleEndian {
		// Raw float32 is the buffer's own memory, and the stream is done with it when Send
		// returns: no copy. (buf does not change while this goroutine sends.)
		clear(a.residual(lo, hi))
		return a.send(phase, c, p, mem.BufferSlice{mem.SliceBuffer(floatBytes(a.buf[lo:hi]))})
	}
	raw := a.op.Codec.rawSize(hi - lo)
	b := payloadPool.Get(raw + raw/64 + 256) // room for incompressible input
	*b = a.enc.Encode((*b)[:0], a.buf[lo:hi], a.residual(lo, hi))
	if phase == ringpb.Phase_PHASE_ALL_GATHER {
		if a.op.Codec.Lossy() {
			if err := a.dec.Decode(a.buf[lo:hi], *b); err != nil {
				return fmt.Errorf("allreduce: op %v: decode own piece: %w", a.key, err)
			}
		}
		if a.op.Encoded != nil {
			a.op.Encoded.add(lo, hi-lo, *b)
		}
	}
	return a.send(phase, c, p, mem.BufferSlice{mem.NewBuffer(b, payloadPool)})
}

func (a *ringOp) send(phase ringpb.Phase, c, p int, payload mem.BufferSlice) error {
	a.out = Piece{
		Run: a.key.run, Epoch: a.key.epoch, Step: a.key.step,
		Phase: phase, Chunk: uint32(c), Index: uint32(p),
		Codec: a.op.Codec.wireID(), Length: uint64(len(a.buf)),
		Payload: payload,
	}
	size := a.out.WireSize()
	a.sending.Store(true)
	err := a.r.send(a.peer, &a.out)
	if err != nil {
		return &PeerError{Peer: a.right, Err: fmt.Errorf("op %v: send: %w", a.key, err)}
	}
	a.sending.Store(false)
	a.res.WireBytesSent += int64(size)
	a.r.mu.Lock()
	a.st.sendsLeft--
	a.r.mu.Unlock()
	return nil
}
