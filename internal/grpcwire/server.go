package grpcwire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Defaults of ServerConfig and DialConfig.
const (
	DefaultMaxFrameSize   = 1 << 20
	DefaultWindow         = 8 << 20
	DefaultMaxRecvMsgSize = 4 << 20
	// handshakeTimeout bounds a connection's TLS handshake, preface and request headers,
	// and so how long a connection may sit idle between streams (clients reconnect).
	handshakeTimeout = 10 * time.Second
	// lingerTimeout bounds how long an ended stream's connection waits for the client to
	// take the trailers and close first (closing with unread bytes would reset them away).
	lingerTimeout = time.Second
)

// Handler serves one stream. The error it returns ends the stream with its gRPC status
// (status.Convert's); nil ends it with OK.
type Handler func(*ServerStream) error

// ServerConfig configures a Server.
type ServerConfig struct {
	// Handlers by full method name, "/package.Service/Method".
	Handlers map[string]Handler
	// TLS, if not nil, is the server's TLS; "h2" is added to its NextProtos.
	TLS *tls.Config
	// Authorize, if not nil, checks every stream's method and metadata (and the address it
	// comes from) before its handler runs; an error (a status error, for its code) refuses it.
	Authorize func(remote, method string, md metadata.MD) error
	// MaxFrameSize is the largest DATA frame clients may send. Default DefaultMaxFrameSize.
	MaxFrameSize uint32
	// Window is each stream's and each connection's flow-control window. Default DefaultWindow.
	Window uint32
	// MaxRecvMsgSize bounds a received message. Default DefaultMaxRecvMsgSize.
	MaxRecvMsgSize int
	// BufferPool supplies received messages' buffers. Default mem.DefaultBufferPool().
	BufferPool mem.BufferPool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *ServerConfig) setDefaults() error {
	if len(c.Handlers) == 0 {
		return errors.New("grpcwire: no handlers")
	}
	if err := checkSizes(&c.MaxFrameSize, &c.Window, &c.MaxRecvMsgSize); err != nil {
		return err
	}
	if c.BufferPool == nil {
		c.BufferPool = mem.DefaultBufferPool()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TLS != nil {
		c.TLS = withH2(c.TLS)
	}
	return nil
}

func checkSizes(frame, window *uint32, msg *int) error {
	if *frame == 0 {
		*frame = DefaultMaxFrameSize
	}
	if *window == 0 {
		*window = DefaultWindow
	}
	if *msg == 0 {
		*msg = DefaultMaxRecvMsgSize
	}
	switch {
	case *frame < defaultMaxFrame || *frame > maxFrameLimit:
		return fmt.Errorf("grpcwire: MaxFrameSize %d outside [%d, %d]", *frame, defaultMaxFrame, maxFrameLimit)
	case *window < defaultWindow || *window > maxWindow:
		return fmt.Errorf("grpcwire: Window %d outside [%d, %d]", *window, defaultWindow, maxWindow)
	case *msg < 0:
		return fmt.Errorf("grpcwire: negative MaxRecvMsgSize %d", *msg)
	}
	return nil
}

func withH2(c *tls.Config) *tls.Config {
	c = c.Clone()
	for _, p := range c.NextProtos {
		if p == "h2" {
			return c
		}
	}
	c.NextProtos = append([]string{"h2"}, c.NextProtos...)
	return c
}

// Server serves gRPC streams on listeners, one stream per connection at a time.
type Server struct {
	cfg ServerConfig
}

// NewServer validates cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg}, nil
}

// Serve accepts connections on lis until ctx is done or lis fails. It then closes lis and
// every connection, as a crash would, and returns once every handler has returned: nil
// after ctx, else the listener's error.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	closeAll := func() {
		lis.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()
	var err error
	for {
		var nc net.Conn
		if nc, err = lis.Accept(); err != nil {
			break
		}
		mu.Lock()
		if closed {
			mu.Unlock()
			nc.Close()
			continue
		}
		conns[nc] = struct{}{}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			s.serveConn(nc)
			mu.Lock()
			delete(conns, nc)
			mu.Unlock()
			nc.Close()
		}()
	}
	closeAll()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("grpcwire: accept: %w", err)
}

// serveConn serves the streams of one connection, one after another.
func (s *Server) serveConn(nc net.Conn) {
	log := s.cfg.Logger.With("remote", nc.RemoteAddr().String())
	nc.SetDeadline(time.Now().Add(handshakeTimeout))
	if s.cfg.TLS != nil {
		tc := tls.Server(nc, s.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			log.Debug("grpcwire: TLS handshake", "err", err)
			return
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			log.Debug("grpcwire: client did not negotiate h2 over TLS", "alpn", p)
			return
		}
		nc = tc
	}
	c := newConn(nc, s.cfg.MaxFrameSize, s.cfg.Window, s.cfg.MaxRecvMsgSize, s.cfg.BufferPool)
	var pre [len(clientPreface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != clientPreface {
		log.Debug("grpcwire: no HTTP/2 client preface", "err", err)
		return
	}
	if err := c.writeHello(true); err != nil {
		return
	}
	var last uint32
	for {
		st, err := s.nextStream(c, last)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("grpcwire: connection ended", "err", err)
			}
			c.abort(err)
			return
		}
		last = st.id
		nc.SetDeadline(time.Time{})
		more := s.serveStream(st)
		if !more {
			return
		}
		nc.SetDeadline(time.Now().Add(handshakeTimeout))
	}
}

// nextStream reads frames up to the next stream's request headers.
func (s *Server) nextStream(c *conn, last uint32) (*ServerStream, error) {
	for {
		h, err := c.readFrameHeader()
		if err != nil {
			return nil, err
		}
		switch h.typ {
		case frameHeaders:
			if h.stream <= last || h.stream%2 == 0 {
				return nil, protocolError("HEADERS on stream %d after %d", h.stream, last)
			}
			fields, err := c.readHeaderBlock(h)
			if err != nil {
				return nil, err
			}
			st := &ServerStream{c: c, id: h.stream, remoteClosed: h.has(flagEndStream)}
			st.req, st.reqErr = parseRequest(fields)
			return st, nil
		case frameData:
			// The end of a stream this side has already finished: given back, then dropped.
			if h.stream == 0 || h.stream > last {
				return nil, protocolError("DATA on idle stream %d", h.stream)
			}
			if _, err := c.br.Discard(int(h.length)); err != nil {
				return nil, err
			}
			if err := c.ack(0, h.length); err != nil {
				return nil, err
			}
		case frameRSTStream:
			if _, err := c.readPayload(h); err != nil {
				return nil, err
			}
		default:
			if err := c.handleControl(h, 0); err != nil {
				var ga *goAway
				if errors.As(err, &ga) {
					return nil, io.EOF
				}
				return nil, err
			}
		}
	}
}

// serveStream runs st's handler and ends the stream. It reports whether the connection can
// carry another stream.
func (s *Server) serveStream(st *ServerStream) bool {
	c := st.c
	c.mu.Lock()
	c.streamWin = c.peerInitWindow
	c.mu.Unlock()
	c.streamUnacked = 0
	err := st.reqErr
	var h Handler
	if err == nil {
		if h = s.cfg.Handlers[st.req.method]; h == nil {
			err = status.Errorf(codes.Unimplemented, "grpcwire: unknown method %s", st.req.method)
		}
	}
	if err == nil && s.cfg.Authorize != nil {
		err = s.cfg.Authorize(c.nc.RemoteAddr().String(), st.req.method, st.req.md)
	}
	if err == nil {
		ctx, cancel := context.WithCancel(context.Background())
		st.ctx = metadata.NewIncomingContext(ctx, st.req.md)
		err = h(st)
		cancel()
	}
	// A handler may return while another goroutine of its still waits in RecvMsg: the
	// deadline ends that wait before the reader is taken back.
	c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	st.rmu.Lock()
	defer st.rmu.Unlock()
	reusable := st.remoteClosed && (st.recvErr == nil || errors.Is(st.recvErr, io.EOF))
	st.recvErr = status.Error(codes.Canceled, "grpcwire: the stream has ended")
	st.asm.release(c.pool)
	st.wmu.Lock()
	fields := trailerFields(status.Convert(err))
	if !st.sentHeaders {
		fields = append(responseFields(subtype(st.req.md), nil), fields...)
	}
	werr := c.writeHeaders(st.id, fields, true)
	st.wmu.Unlock()
	if werr != nil {
		return false
	}
	if reusable {
		c.nc.SetReadDeadline(time.Time{})
		return true
	}
	// The client may still be sending, or its frames can no longer be followed: it has the
	// status it needs to stop, and the connection ends.
	_ = c.writeControl(func(b []byte) []byte {
		return appendGoAway(appendRSTStream(b, st.id, errCodeNo), st.id, errCodeNo)
	})
	s.linger(c)
	return false
}

// linger waits a little for the client to close, reading what it still sends, so that the
// trailers are not lost to a reset.
func (s *Server) linger(c *conn) {
	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, c.br)
}

func subtype(md metadata.MD) string {
	if v := md.Get("content-type"); len(v) > 0 {
		if len(v[0]) > len(contentType)+1 && v[0][len(contentType)] == '+' {
			return v[0][len(contentType)+1:]
		}
	}
	return ""
}

// ServerStream is the server's end of a stream. RecvMsg and SendMsg may run at the same
// time, but not two of either.
type ServerStream struct {
	c      *conn
	id     uint32
	req    request
	reqErr error
	ctx    context.Context

	rmu          sync.Mutex
	asm          assembler
	remoteClosed bool
	recvErr      error

	wmu         sync.Mutex
	sentHeaders bool
}

// Context carries the stream's metadata (metadata.FromIncomingContext); it is cancelled
// when the handler returns.
func (st *ServerStream) Context() context.Context { return st.ctx }

// Method is the stream's full method name.
func (st *ServerStream) Method() string { return st.req.method }

// RecvMsg returns the next message, which the caller then owns (and frees); io.EOF once
// the client has half-closed, or a status error.
func (st *ServerStream) RecvMsg() (mem.BufferSlice, error) {
	st.rmu.Lock()
	defer st.rmu.Unlock()
	for len(st.asm.done) == 0 {
		if st.recvErr != nil {
			return nil, st.recvErr
		}
		if st.remoteClosed {
			st.recvErr = io.EOF
			if st.asm.partial() {
				st.recvErr = status.Error(codes.Internal, "grpcwire: the client ended the stream inside a message")
			}
			continue
		}
		if err := st.readFrame(); err != nil {
			st.recvErr = err
			var se interface{ GRPCStatus() *status.Status }
			if !errors.As(err, &se) {
				st.recvErr = st.c.abort(err)
			}
		}
	}
	m := st.asm.done[0]
	st.asm.done = st.asm.done[1:]
	return m, nil
}

// readFrame reads and handles one frame.
func (st *ServerStream) readFrame() error {
	c := st.c
	h, err := c.readFrameHeader()
	if err != nil {
		return err
	}
	switch h.typ {
	case frameData:
		if h.stream != st.id {
			return protocolError("DATA on stream %d while %d is open", h.stream, st.id)
		}
		if err := c.readData(h, &st.asm); err != nil {
			return err
		}
		st.remoteClosed = h.has(flagEndStream)
	case frameHeaders:
		if h.stream == st.id {
			return protocolError("trailers from a gRPC client")
		}
		// One stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS 1): a second is refused,
		// its headers decoded all the same to keep HPACK's state.
		if _, err := c.readHeaderBlock(h); err != nil {
			return err
		}
		return c.writeControl(func(b []byte) []byte { return appendRSTStream(b, h.stream, errCodeRefusedStream) })
	case frameRSTStream:
		p, err := c.readPayload(h)
		if err != nil {
			return err
		}
		if h.stream == st.id && len(p) == 4 {
			return status.Errorf(codes.Canceled, "grpcwire: the client cancelled the stream (code %d)", uint32(p[0])<<24|uint32(p[1])<<16|uint32(p[2])<<8|uint32(p[3]))
		}
	default:
		if err := c.handleControl(h, st.id); err != nil {
			var ga *goAway
			if errors.As(err, &ga) {
				return nil // the client's stream, already open, goes on
			}
			return err
		}
	}
	return nil
}

// SendMsg sends msg, which it frees. The client's window must have room for it: a server
// stream does not wait for the window to open, since only RecvMsg reads the client's
// window updates.
func (st *ServerStream) SendMsg(msg mem.BufferSlice) error {
	defer msg.Free()
	st.wmu.Lock()
	defer st.wmu.Unlock()
	if err := st.sendHeaderLocked(nil); err != nil {
		return err
	}
	return st.c.sendMsg(st.id, msg, false)
}

// SendHeader sends the response headers now, with md; they are otherwise sent, without
// metadata, before the first message or with the status. It fails if they were sent.
func (st *ServerStream) SendHeader(md metadata.MD) error {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	if st.sentHeaders {
		return errors.New("grpcwire: the headers were sent")
	}
	return st.sendHeaderLocked(md)
}

func (st *ServerStream) sendHeaderLocked(md metadata.MD) error {
	if st.sentHeaders {
		return nil
	}
	if err := st.c.writeHeaders(st.id, responseFields(subtype(st.req.md), md), false); err != nil {
		return st.c.fail(err)
	}
	st.sentHeaders = true
	return nil
}
