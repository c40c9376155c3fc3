package allreduce

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// The production transport: each member keeps one long-lived Pipe stream (ring.proto) to
// each right-hand neighbour, over one gRPC connection per neighbour.

// fromKey is the metadata key naming the sending member (its Config.Self).
const fromKey = "ncsn-ring-from"

// Register adds the ring service to s (for example the worker's authenticated server).
// The server should use ServerOptions for throughput.
func (r *Ring) Register(s grpc.ServiceRegistrar) { ringpb.RegisterRingServer(s, service{r: r}) }

// ServerOptions are the window and buffer sizes the ring's streams need for throughput.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(windowSize),
		grpc.InitialConnWindowSize(2 * windowSize),
		grpc.ReadBufferSize(bufferSize),
		grpc.WriteBufferSize(bufferSize),
		grpc.MaxRecvMsgSize(MaxChunkBytes + 1<<16),
		experimental.BufferPool(payloadPool),
	}
}

// Reads and writes are batched through buffers of bufferSize. A read buffer costs a copy of
// every byte, but without one each 16 KiB frame takes two reads (header, payload), and
// syscalls are what a loopback transfer pays most for: on an AMD EPYC guest (PVM), 8 MiB
// across 4 processes took 25% less time with it; on an Intel Xeon it was within the noise.
// Every write to a loopback socket runs the receiver's TCP stack too.
const (
	windowSize = 8 << 20
	bufferSize = 256 << 10
)

func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(windowSize),
		grpc.WithInitialConnWindowSize(2 * windowSize),
		grpc.WithReadBufferSize(bufferSize),
		grpc.WithWriteBufferSize(bufferSize),
		experimental.WithBufferPool(payloadPool),
	}
}

// Serve serves the ring service alone on lis (tests, benchmarks) until ctx is done or the
// Ring is closed, and returns after the server has stopped. opts are added to ServerOptions.
func (r *Ring) Serve(ctx context.Context, lis net.Listener, opts ...grpc.ServerOption) error {
	s := grpc.NewServer(append(ServerOptions(), opts...)...)
	r.Register(s)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("allreduce: serve: %w", err)
	case <-ctx.Done():
	case <-r.closing:
	}
	s.Stop()
	<-errc
	return nil
}

// service is the Ring service of ring.proto.
type service struct {
	ringpb.UnimplementedRingServer
	r *Ring
}

// Pipe receives a left neighbour's pieces. It returns when the neighbour closes the stream
// or the Ring is closed; gRPC then ends the stream.
func (s service) Pipe(stream ringpb.Ring_PipeServer) error {
	from, in := "", grpcInbound{s: stream}
	if md, ok := metadata.FromIncomingContext(stream.Context()); ok {
		if v := md.Get(fromKey); len(v) > 0 {
			from = v[0]
		}
		v := md.Get("content-type")
		in.fast = len(v) > 0 && strings.HasSuffix(v[0], "+"+wireCodecName)
	}
	err := s.r.Accept(from, in)
	switch {
	case errors.Is(err, ErrClosed):
		return status.Error(codes.Unavailable, "allreduce: ring closed")
	case status.Code(err) == codes.Canceled:
		return nil // the neighbour ended the stream
	}
	return err
}

type grpcInbound struct {
	s    ringpb.Ring_PipeServer
	fast bool // the sender uses the ring's codec, which unmarshals into a Piece
}

func (in grpcInbound) Recv() (*Piece, error) {
	if in.fast {
		p := &Piece{}
		if err := in.s.RecvMsg(p); err != nil {
			return nil, err
		}
		return p, nil
	}
	m, err := in.s.Recv()
	if err != nil {
		return nil, err
	}
	return fromProto(m), nil
}

func (in grpcInbound) Send(ref *ringpb.Refusal) error { return in.s.Send(ref) }

// grpcTransport opens Pipe streams, keeping one connection per neighbour.
type grpcTransport struct {
	self string
	opts []grpc.DialOption

	mu     sync.Mutex
	closed bool
	conns  map[string]*grpc.ClientConn
}

func newGRPCTransport(self string, opts []grpc.DialOption) *grpcTransport {
	return &grpcTransport{self: self, opts: append(dialOptions(), opts...), conns: map[string]*grpc.ClientConn{}}
}

func (t *grpcTransport) Open(ctx context.Context, addr string) (Stream, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, fmt.Errorf("allreduce: %w", ErrClosed)
	}
	conn := t.conns[addr]
	if conn == nil {
		var err error
		if conn, err = grpc.NewClient(addr, t.opts...); err != nil {
			t.mu.Unlock()
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		t.conns[addr] = conn
	}
	t.mu.Unlock()
	ctx = metadata.AppendToOutgoingContext(ctx, fromKey, t.self)
	s, err := ringpb.NewRingClient(conn).Pipe(ctx, grpc.CallContentSubtype(wireCodecName))
	if err != nil {
		return nil, err
	}
	return grpcStream{s}, nil
}

// close closes every connection.
func (t *grpcTransport) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, c := range t.conns {
		c.Close()
	}
	t.conns = nil
}

type grpcStream struct{ s ringpb.Ring_PipeClient }

func (s grpcStream) Send(p *Piece) error {
	err := s.s.SendMsg(p)
	if p.Payload != nil { // not marshalled: gRPC failed before taking it
		p.Free()
	}
	return err
}

func (s grpcStream) Recv() (*ringpb.Refusal, error) { return s.s.Recv() }
func (s grpcStream) CloseSend() error               { return s.s.CloseSend() }
