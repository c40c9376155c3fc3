package allreduce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ncsn/ncsn/internal/grpcwire"
	"github.com/ncsn/ncsn/proto/ringpb"
)

// The production transport: each member opens one long-lived Pipe stream (ring.proto) to
// each right-hand neighbour, a gRPC stream on a connection of its own. It is served and
// opened by internal/grpcwire rather than grpc-go: the same wire, but frames as large as a
// piece and no copies or goroutine hand-offs between the socket and the ring. With grpc-go's
// 16 KiB frames and buffers, 8 MiB across 4 processes on 2 cores took 1.6–2× gloo's time.

// Metadata keys of the Pipe stream.
const (
	// fromKey names the sending member (its Config.Self).
	fromKey = "ncsn-ring-from"
	// hostKey carries the sender's hostIdentity: it asks for the receiver's Unix socket.
	// The receiver answers in its response headers, with localKey naming the socket and
	// ending the stream if the identities match, else with no name and going on.
	hostKey  = "ncsn-ring-host"
	localKey = "ncsn-ring-local"
)

// headerWait bounds the wait for a neighbour's answer to hostKey; one that does not answer
// (not an ncsn member) keeps the stream on TCP.
const headerWait = time.Second

// localBuf is the send buffer a Unix-socket stream asks for: room for a piece and more in
// flight, as TCP's autotuned buffers have.
const localBuf = 4 << 20

// Flow control and framing of the ring's streams. A window of several pieces keeps the
// pipeline full; frames as large as a piece's message send it in one write.
const (
	windowSize = 8 << 20
	maxMsgSize = MaxChunkBytes + 1<<16 // a piece and its header, compressed or not
)

// Serve serves the ring's Pipe streams on lis, and for neighbours on this host on a Unix
// socket (see wireTransport), until ctx is done or the Ring is closed; it returns after
// every stream it served has ended.
func (r *Ring) Serve(ctx context.Context, lis net.Listener) error {
	srv, err := grpcwire.NewServer(grpcwire.ServerConfig{
		Handlers:       map[string]grpcwire.Handler{ringpb.Ring_Pipe_FullMethodName: r.pipe},
		TLS:            r.cfg.ServerTLS,
		Authorize:      r.cfg.Authorize,
		MaxFrameSize:   maxMsgSize + 5,
		Window:         windowSize,
		MaxRecvMsgSize: maxMsgSize,
		BufferPool:     payloadPool,
		Logger:         r.log,
	})
	if err != nil {
		return fmt.Errorf("allreduce: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-r.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	localDone := make(chan error, 1)
	if ul := r.listenLocal(); ul != nil {
		go func() { localDone <- srv.Serve(ctx, ul) }()
	} else {
		localDone <- nil
	}
	err = srv.Serve(ctx, lis)
	cancel()
	lerr := <-localDone
	r.setLocal("")
	<-done
	if err = errors.Join(err, lerr); err != nil {
		return fmt.Errorf("allreduce: serve: %w", err)
	}
	return nil
}

// listenLocal opens the Unix socket that neighbours on this host are told of, if it can.
func (r *Ring) listenLocal() net.Listener {
	if r.host == "" {
		return nil
	}
	lis, name, err := listenLocal(r.minLocalBuf)
	if err != nil {
		r.log.Info("allreduce: neighbours on this host reach this member over TCP, not a Unix socket", "reason", err)
		return nil
	}
	r.setLocal(name)
	return lis
}

func (r *Ring) setLocal(name string) {
	r.mu.Lock()
	r.localName = name
	r.mu.Unlock()
}

// pipe receives a left neighbour's pieces. It returns when the neighbour ends the stream
// (its error, if not a clean close, goes back as the stream's status) or the Ring is closed.
func (r *Ring) pipe(s *grpcwire.ServerStream) error {
	from := ""
	md, _ := metadata.FromIncomingContext(s.Context())
	if v := md.Get(fromKey); len(v) > 0 {
		from = v[0]
	}
	if v := md.Get(hostKey); len(v) > 0 {
		// The neighbour asks whether it can reach this member over a Unix socket.
		r.mu.Lock()
		name := r.localName
		r.mu.Unlock()
		if v[0] == r.host && name != "" {
			return s.SendHeader(metadata.Pairs(localKey, name))
		}
		if err := s.SendHeader(nil); err != nil {
			return err
		}
	}
	err := r.Accept(from, wireInbound{s})
	if errors.Is(err, ErrClosed) {
		return status.Error(codes.Unavailable, "allreduce: ring closed")
	}
	return err
}

type wireInbound struct{ s *grpcwire.ServerStream }

func (in wireInbound) Recv() (*Piece, error) {
	m, err := in.s.RecvMsg()
	if err != nil {
		return nil, err
	}
	p := &Piece{}
	err = wireCodec{}.Unmarshal(m, p) // p takes references to m's bytes
	m.Free()
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "allreduce: malformed piece: %v", err)
	}
	return p, nil
}

func (in wireInbound) Send(ref *ringpb.Refusal) error {
	b, err := proto.Marshal(ref)
	if err != nil {
		return err
	}
	return in.s.SendMsg(mem.BufferSlice{mem.SliceBuffer(b)})
}

// wireTransport opens Pipe streams, each on a connection of its own. A neighbour on this
// host (the same kernel and network namespace) is asked over TCP for its Unix socket, and
// the stream moves there: on loopback, a Unix socket carries bytes for less than half the
// CPU of TCP. The socket's name is asked for afresh at every open, over a stream that the
// neighbour has authorized, so a stale name is never dialled; the stream over it carries the
// same credentials and TLS as over TCP.
type wireTransport struct {
	self string
	host string // hostIdentity, or "" to keep to TCP
	cfg  grpcwire.DialConfig
	md   func(method string) metadata.MD
	log  *slog.Logger
	m    *metrics
}

func newWireTransport(cfg Config, host string, log *slog.Logger, m *metrics) *wireTransport {
	return &wireTransport{
		self: cfg.Self,
		host: host,
		cfg:  grpcwire.DialConfig{TLS: cfg.ClientTLS, ContentSubtype: wireCodecName, BufferPool: payloadPool},
		md:   cfg.Metadata,
		log:  log,
		m:    m,
	}
}

// sendsInPlace: a grpcwire stream writes a message out before SendMsg returns.
func (*wireTransport) sendsInPlace() bool { return true }

func (t *wireTransport) Open(ctx context.Context, addr string) (Stream, error) {
	md := metadata.Pairs(fromKey, t.self)
	if t.md != nil {
		md = metadata.Join(md, t.md(ringpb.Ring_Pipe_FullMethodName))
	}
	if t.host == "" {
		return t.open(ctx, addr, md, "")
	}
	s, err := grpcwire.Open(ctx, addr, ringpb.Ring_Pipe_FullMethodName, metadata.Join(md, metadata.Pairs(hostKey, t.host)), t.cfg)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, headerWait)
	h, err := s.Header(hctx)
	cancel()
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		// Not an ncsn member: a gRPC server sends headers only with its first message.
	case err != nil:
		s.Close()
		return nil, err
	}
	v := h.Get(localKey)
	if len(v) == 0 {
		t.m.opened.WithLabelValues("tcp").Inc()
		return wireStream{s}, nil
	}
	s.Close()
	ls, err := t.open(ctx, addr, md, v[0])
	if err == nil {
		return ls, nil
	}
	t.log.Warn("allreduce: neighbour's Unix socket failed; using TCP", "peer", addr, "err", err)
	return t.open(ctx, addr, md, "")
}

// dialLocal connects to a neighbour's Unix socket with the send buffer a piece needs in
// flight; the kernel may grant less (listenLocal checked that it does not).
func dialLocal(ctx context.Context, name string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", name)
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	if err := uc.SetWriteBuffer(localBuf); err != nil {
		uc.Close()
		return nil, fmt.Errorf("send buffer: %w", err)
	}
	return uc, nil
}

// open opens a stream to addr over TCP, or over the Unix socket local if not "".
func (t *wireTransport) open(ctx context.Context, addr string, md metadata.MD, local string) (Stream, error) {
	cfg, socket := t.cfg, "tcp"
	if local != "" {
		socket = "unix"
		cfg.Dial = func(ctx context.Context, _ string) (net.Conn, error) { return dialLocal(ctx, local) }
	}
	s, err := grpcwire.Open(ctx, addr, ringpb.Ring_Pipe_FullMethodName, md, cfg)
	if err != nil {
		return nil, err
	}
	t.m.opened.WithLabelValues(socket).Inc()
	return wireStream{s}, nil
}

type wireStream struct{ s *grpcwire.ClientStream }

func (s wireStream) Send(p *Piece) error {
	data, err := wireCodec{}.Marshal(p) // takes p.Payload unless it fails
	if err != nil {
		p.Free()
		return err
	}
	return s.s.SendMsg(data)
}

func (s wireStream) Recv() (*ringpb.Refusal, error) {
	m, err := s.s.RecvMsg()
	if err != nil {
		return nil, err
	}
	defer m.Free()
	ref := &ringpb.Refusal{}
	if err := proto.Unmarshal(m.Materialize(), ref); err != nil {
		return nil, fmt.Errorf("allreduce: malformed refusal: %w", err)
	}
	return ref, nil
}

func (s wireStream) CloseSend() error { return s.s.CloseSend() }
