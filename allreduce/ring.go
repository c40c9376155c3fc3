// Package allreduce sums flat float32 buffers across the members of a ring: reduce-scatter
// then all-gather, each chunk pipelined in pieces, optionally quantised (bf16, int8 with error
// feedback) and compressed (zstd, s2). The schedule (schedule.go) is pure; the ring's shell
// sends pieces over a Transport: gRPC in production, a simulated network (package memnet) in
// tests and simulations.
package allreduce

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/metadata"
)

// Defaults of Config.
const (
	DefaultChunkBytes      = MaxChunkBytes
	DefaultTimeout         = 30 * time.Second
	DefaultMaxPendingBytes = 1 << 30
	// MaxChunkBytes keeps every message under gRPC's default 4 MiB receive limit.
	MaxChunkBytes = 2 << 20
)

// Config configures a Ring.
type Config struct {
	// Self is this member's address exactly as it appears in Op.Members.
	Self string
	// ServerTLS and ClientTLS, if not nil, put the ring's streams under TLS: the first those
	// that neighbours open to this member (Serve), the second those it opens.
	ServerTLS, ClientTLS *tls.Config
	// Metadata, if not nil, is what every stream this member opens carries besides its name
	// (credentials). Authorize, if not nil, checks what every stream to Serve carries (and
	// the address it comes from): an error (a gRPC status error, for its code) refuses it.
	Metadata  func(method string) metadata.MD
	Authorize func(remote, method string, md metadata.MD) error
	// TCPOnly keeps streams to neighbours on this host on TCP. By default, where the system
	// allows (Linux, with net.core.wmem_max of at least 4 MiB), such a stream moves to a Unix
	// socket once the neighbour has authorized it over TCP.
	TCPOnly bool
	// Transport, if not nil, replaces gRPC (and the five fields above) for reaching
	// neighbours, e.g. MemnetTransport.
	Transport Transport
	// ChunkBytes is the float32 input size of one pipelined piece; rounded down to whole
	// int8 blocks. Every member must use the same value. Default DefaultChunkBytes.
	ChunkBytes int
	// Timeout bounds an operation when Op.Timeout is zero. Default DefaultTimeout.
	Timeout time.Duration
	// MaxPendingBytes bounds the pieces held for operations that neighbours have started and
	// this member has not. Default DefaultMaxPendingBytes.
	MaxPendingBytes int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the ring's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Op describes one all-reduce. Every member passes the same Run, Epoch, Step, Members and
// Codec, and a buffer of the same length.
type Op struct {
	Run   string
	Epoch uint64
	Step  uint64
	// Members is the ring in order; each member sends to the next one. It includes Config.Self.
	Members []string
	Codec   Codec
	// Residual, if not nil, is error feedback for lossy codecs: it has len(buf), is added to buf
	// before reducing, and is overwritten with this member's quantisation error, to be fed into
	// the next operation. Start it at zero and keep passing the same slice. After an error its
	// contents are unspecified.
	Residual []float32
	// Timeout overrides Config.Timeout for this operation.
	Timeout time.Duration
	// Encoded, if not nil, receives the result in its wire encoding (see Encoded). It stays
	// empty under codec none, whose encoding is the buffer itself, and is incomplete after
	// an error.
	Encoded *Encoded
}

// Result reports one operation.
type Result struct {
	Duration time.Duration
	// Wire bytes of the ring messages this member sent and received (protobuf-encoded size).
	WireBytesSent, WireBytesReceived int64
}

// Ring is one member's end of ring all-reduces. Several operations may run at once if they
// have distinct {run, epoch, step}; a new ring view needs no new Ring.
type Ring struct {
	cfg        Config
	log        *slog.Logger
	m          *metrics
	pieceElems int
	transport  Transport
	inPlace    bool // the transport is done with a payload when Send returns
	// host is hostIdentity, or "" if neighbours on this host use TCP; minLocalBuf is the
	// Unix socket send buffer below which they do too.
	host        string
	minLocalBuf int

	ctx     context.Context // ends the streams to neighbours on Close
	cancel  context.CancelFunc
	closing chan struct{}
	wg      sync.WaitGroup // stream readers and receive loops

	mu           sync.Mutex
	closed       bool
	localName    string // the Unix socket Serve listens on, if any
	floor        uint64 // oldest epoch still accepted
	ops          map[opKey]*opState
	pendingBytes int
	streams      uint64 // counts Pipe streams, to tell them apart
	peers        map[string]*peer
	coders       map[Codec][]*coderPair

	testHookPiece func(*Piece) // called by AllReduce for each received piece
}

// New validates cfg and returns a Ring. Serve it with Serve.
func New(cfg Config) (*Ring, error) {
	if cfg.Self == "" {
		return nil, errors.New("allreduce: Config.Self is empty")
	}
	if cfg.ChunkBytes == 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	if cfg.ChunkBytes < 4*Int8Block || cfg.ChunkBytes > MaxChunkBytes {
		return nil, fmt.Errorf("allreduce: ChunkBytes %d outside [%d, %d]", cfg.ChunkBytes, 4*Int8Block, MaxChunkBytes)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("allreduce: negative Timeout %v", cfg.Timeout)
	}
	if cfg.MaxPendingBytes == 0 {
		cfg.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Ring{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "allreduce", "self", cfg.Self),
		m:          m,
		pieceElems: cfg.ChunkBytes / 4 / Int8Block * Int8Block,
		ctx:        ctx,
		cancel:     cancel,
		closing:    make(chan struct{}),
		ops:        map[opKey]*opState{},
		peers:      map[string]*peer{},
		coders:     map[Codec][]*coderPair{},
		transport:  cfg.Transport,
	}
	if r.transport == nil {
		if !cfg.TCPOnly {
			r.host, r.minLocalBuf = hostIdentity(), localBuf
		}
		r.transport = newWireTransport(cfg, r.host, r.log, m)
	}
	if s, ok := r.transport.(inPlaceSender); ok {
		r.inPlace = s.sendsInPlace()
	}
	return r, nil
}

// Abort ends every operation of an epoch older than epoch with an error wrapping ErrAborted,
// and from then on refuses pieces of those epochs.
func (r *Ring) Abort(epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.raiseFloorLocked(epoch)
}

func (r *Ring) raiseFloorLocked(epoch uint64) {
	if epoch <= r.floor {
		return
	}
	r.floor = epoch
	for k, st := range r.ops {
		if k.epoch >= epoch {
			continue
		}
		if st.active {
			r.failLocked(st, fmt.Errorf("allreduce: epoch %d: %w (now %d)", k.epoch, ErrAborted, epoch))
		} else {
			r.dropLocked(k, st)
		}
	}
}

// Close fails the running operations with ErrClosed, flushes and closes the streams to
// neighbours, and returns once every goroutine of the Ring has exited. It is idempotent.
func (r *Ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait()
		return nil
	}
	r.closed = true
	close(r.closing)
	for k, st := range r.ops {
		if st.active {
			r.failLocked(st, fmt.Errorf("allreduce: %w", ErrClosed))
		} else {
			r.dropLocked(k, st)
		}
	}
	peers := make([]*peer, 0, len(r.peers))
	for _, p := range r.peers {
		peers = append(peers, p)
	}
	r.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.shutdown(flushTimeout)
		}()
	}
	wg.Wait()
	r.cancel()
	r.wg.Wait()
	return nil
}

// flushTimeout bounds how long Close waits for neighbours to take the last pieces.
const flushTimeout = 2 * time.Second

type opKey struct {
	run         string
	epoch, step uint64
}

func (k opKey) String() string { return fmt.Sprintf("%s/%d/%d", k.run, k.epoch, k.step) }

// opState is an operation as the receive side sees it: pending (pieces arrived before the
// local AllReduce started), active, or failed (a tombstone that refuses late pieces).
// All fields are guarded by Ring.mu.
type opState struct {
	key         opKey
	active      bool
	left, right string
	sendsLeft   int
	via         uint64 // the stream the latest piece came on
	items       []item
	head        int
	bytes       int
	wake        chan struct{} // cap 1: items or failure arrived
	err         error
	cancel      context.CancelCauseFunc
}

type item struct {
	m   *Piece
	eof error // the stream from the left neighbour ended
}

func newOpState(k opKey) *opState { return &opState{key: k, wake: make(chan struct{}, 1)} }

func (st *opState) signal() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (r *Ring) failLocked(st *opState, err error) {
	if st.err != nil {
		return
	}
	st.err = err
	r.releaseItemsLocked(st)
	if st.cancel != nil {
		st.cancel(err)
	}
	st.signal()
}

func (r *Ring) releaseItemsLocked(st *opState) {
	if !st.active {
		r.pendingBytes -= st.bytes
	}
	for _, it := range st.items[st.head:] {
		if it.m != nil {
			it.m.Free()
		}
	}
	st.items, st.head, st.bytes = nil, 0, 0
}

func (r *Ring) dropLocked(k opKey, st *opState) {
	r.releaseItemsLocked(st)
	delete(r.ops, k)
}

// next returns the next item for an active operation.
func (r *Ring) next(ctx context.Context, st *opState) (item, error) {
	for {
		r.mu.Lock()
		if st.err != nil {
			r.mu.Unlock()
			return item{}, st.err
		}
		if st.head < len(st.items) {
			it := st.items[st.head]
			st.items[st.head] = item{}
			st.head++
			if st.head == len(st.items) {
				st.items, st.head = st.items[:0], 0
			}
			if it.m != nil {
				st.bytes -= it.m.payloadLen()
			}
			r.mu.Unlock()
			return it, nil
		}
		r.mu.Unlock()
		select {
		case <-st.wake:
		case <-ctx.Done():
			return item{}, ctx.Err()
		}
	}
}
