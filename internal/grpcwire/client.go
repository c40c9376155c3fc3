package grpcwire

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// DialConfig configures the client end of streams.
type DialConfig struct {
	// TLS, if not nil, is the client's TLS; "h2" is added to its NextProtos.
	TLS *tls.Config
	// ContentSubtype names the messages' codec in content-type ("application/grpc+<it>");
	// empty means protobuf.
	ContentSubtype string
	// Window is the stream's and the connection's flow-control window for what the server
	// sends. Default DefaultWindow.
	Window uint32
	// MaxRecvMsgSize bounds a received message. Default DefaultMaxRecvMsgSize.
	MaxRecvMsgSize int
	// BufferPool supplies received messages' buffers. Default mem.DefaultBufferPool().
	BufferPool mem.BufferPool
	// Dial, if not nil, connects in place of a TCP dial of addr (to a Unix socket, say);
	// addr still names the server, as the :authority and TLS's default server name.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// clientStreamID is the only stream a client connection opens.
const clientStreamID = 1

// ClientStream is the client's end of a stream, on a connection of its own. SendMsg and
// RecvMsg may run at the same time, but not two of either. A goroutine reads the
// connection; it and the connection end when the stream ends, when ctx is done, or on
// Close.
type ClientStream struct {
	c    *conn
	stop func() bool

	mu     sync.Mutex
	cond   sync.Cond
	queue  []mem.BufferSlice
	queued int
	final  error // io.EOF after an OK status; set last by the reader, which then exits
	done   chan struct{}

	header  metadata.MD   // set before gotHead is closed
	gotHead chan struct{} // closed when the response headers arrive (not trailers-only)
}

// Open dials addr and opens a stream to method (full name, "/package.Service/Method")
// carrying md. The stream ends when ctx is done.
func Open(ctx context.Context, addr, method string, md metadata.MD, cfg DialConfig) (*ClientStream, error) {
	var frame uint32 = defaultMaxFrame // servers send little: refusals, statuses
	if err := checkSizes(&frame, &cfg.Window, &cfg.MaxRecvMsgSize); err != nil {
		return nil, err
	}
	if cfg.BufferPool == nil {
		cfg.BufferPool = mem.DefaultBufferPool()
	}
	dial := cfg.Dial
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	nc, err := dial(ctx, addr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "grpcwire: dial %s: %v", addr, err)
	}
	scheme := "http"
	if cfg.TLS != nil {
		tcfg := withH2(cfg.TLS)
		if tcfg.ServerName == "" {
			tcfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(nc, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, status.Errorf(codes.Unavailable, "grpcwire: TLS handshake with %s: %v", addr, err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			tc.Close()
			return nil, status.Errorf(codes.Unavailable, "grpcwire: %s did not negotiate h2 over TLS (ALPN %q)", addr, p)
		}
		nc, scheme = tc, "https"
	}
	return open(ctx, nc, scheme, addr, method, md, cfg)
}

// open opens the stream on nc, a connection ready for HTTP/2.
func open(ctx context.Context, nc net.Conn, scheme, addr, method string, md metadata.MD, cfg DialConfig) (*ClientStream, error) {
	s := &ClientStream{
		c:    newConn(nc, defaultMaxFrame, cfg.Window, cfg.MaxRecvMsgSize, cfg.BufferPool),
		done: make(chan struct{}), gotHead: make(chan struct{}),
	}
	s.cond.L = &s.mu
	err := s.c.writeHello(false)
	if err == nil {
		err = s.c.writeHeaders(clientStreamID, requestFields(scheme, addr, method, cfg.ContentSubtype, md), false)
	}
	if err != nil {
		nc.Close()
		return nil, status.Errorf(codes.Unavailable, "grpcwire: open stream to %s: %v", addr, err)
	}
	s.stop = context.AfterFunc(ctx, func() {
		s.c.fail(status.FromContextError(ctx.Err()).Err())
	})
	go s.read()
	return s, nil
}

// read reads the connection until the stream ends.
func (s *ClientStream) read() {
	var asm assembler
	err := s.readFrames(&asm)
	asm.release(s.c.pool)
	s.stop()
	ferr := s.c.fail(err) // the first cause, if ctx or Close came first
	if errors.Is(err, io.EOF) {
		ferr = io.EOF
	}
	s.mu.Lock()
	s.final = ferr
	s.cond.Broadcast()
	close(s.done)
	s.mu.Unlock()
}

// readFrames returns io.EOF after an OK status, else the stream's error.
func (s *ClientStream) readFrames(asm *assembler) error {
	c := s.c
	gotHeaders := false
	for {
		h, err := c.readFrameHeader()
		if err != nil {
			return c.abort(err)
		}
		switch h.typ {
		case frameData:
			if h.stream != clientStreamID || !gotHeaders {
				return c.abort(protocolError("DATA on stream %d before its headers", h.stream))
			}
			if err := c.readData(h, asm); err != nil {
				return c.abort(err)
			}
			if len(asm.done) > 0 {
				s.mu.Lock()
				for _, m := range asm.done {
					s.queue = append(s.queue, m)
					s.queued += m.Len()
				}
				over := s.queued > int(c.recvWindow)
				s.cond.Broadcast()
				s.mu.Unlock()
				asm.done = asm.done[:0]
				if over {
					return status.Error(codes.ResourceExhausted, "grpcwire: the stream's messages are not being read")
				}
			}
			if h.has(flagEndStream) {
				return status.Error(codes.Internal, "grpcwire: the server ended the stream without a status")
			}
		case frameHeaders:
			if h.stream != clientStreamID {
				return c.abort(protocolError("HEADERS on stream %d", h.stream))
			}
			fields, err := c.readHeaderBlock(h)
			if err != nil {
				return c.abort(err)
			}
			r, err := parseResponse(fields)
			if err != nil {
				return err
			}
			if !gotHeaders {
				gotHeaders = true
				if r.httpStatus != "200" {
					return status.Errorf(httpStatusCode(r.httpStatus), "grpcwire: HTTP status %q", r.httpStatus)
				}
				if r.st == nil && !isGRPC(r.ct) {
					return status.Errorf(codes.Internal, "grpcwire: content-type %q is not gRPC", r.ct)
				}
			}
			if !h.has(flagEndStream) {
				if r.st != nil {
					return c.abort(protocolError("trailers without END_STREAM"))
				}
				if s.header == nil {
					s.header = r.md
					close(s.gotHead)
				}
				continue
			}
			if r.st == nil {
				return status.Error(codes.Internal, "grpcwire: the server's trailers carry no grpc-status")
			}
			if err := r.st.Err(); err != nil {
				return err
			}
			return io.EOF
		case frameRSTStream:
			p, err := c.readPayload(h)
			if err != nil {
				return c.abort(err)
			}
			if h.stream != clientStreamID || len(p) != 4 {
				continue
			}
			switch code := uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3]); code {
			case errCodeCancel:
				return status.Error(codes.Canceled, "grpcwire: the server cancelled the stream")
			case errCodeRefusedStream:
				return status.Error(codes.Unavailable, "grpcwire: the server refused the stream")
			default:
				return status.Errorf(codes.Internal, "grpcwire: the server reset the stream (code %d)", code)
			}
		default:
			if err := c.handleControl(h, clientStreamID); err != nil {
				var ga *goAway
				if errors.As(err, &ga) {
					if ga.last >= clientStreamID {
						continue // the stream goes on to its end
					}
					return status.Errorf(codes.Unavailable, "grpcwire: the server went away before the stream (code %d)", ga.code)
				}
				return c.abort(err)
			}
		}
	}
}

// SendMsg sends msg, which it frees, waiting while the server's window is full. After the
// stream has ended it returns the stream's status error, or io.EOF if that was OK (grpc-go
// returns io.EOF for both, leaving the status to RecvMsg).
func (s *ClientStream) SendMsg(msg mem.BufferSlice) error {
	defer msg.Free()
	err := s.c.sendMsg(clientStreamID, msg, true)
	if err != nil && s.ended() {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.final
	}
	return err
}

// Header waits for the server's response headers and returns their metadata. A stream that
// ends without them (the server refused it, say) returns its status error, or io.EOF if OK;
// if ctx ends first, Header returns ctx's error and the stream goes on.
func (s *ClientStream) Header(ctx context.Context) (metadata.MD, error) {
	select {
	case <-s.gotHead:
		return s.header, nil
	case <-s.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-s.gotHead: // headers, then the end, before this call
		return s.header, nil
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return nil, s.final
}

func (s *ClientStream) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// CloseSend tells the server that no more messages follow.
func (s *ClientStream) CloseSend() error {
	if err := s.c.endStream(clientStreamID); err != nil {
		return s.c.fail(err)
	}
	return nil
}

// RecvMsg returns the server's next message, which the caller then owns (and frees); io.EOF
// once the server has ended the stream with OK, or the stream's error.
func (s *ClientStream) RecvMsg() (mem.BufferSlice, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) == 0 && s.final == nil {
		s.cond.Wait()
	}
	if len(s.queue) == 0 {
		return nil, s.final
	}
	m := s.queue[0]
	s.queue = s.queue[1:]
	s.queued -= m.Len()
	return m, nil
}

// Close ends the stream (if it has not ended) and returns once its goroutine has exited,
// freeing the messages not received. Idempotent.
func (s *ClientStream) Close() {
	s.c.fail(status.Error(codes.Canceled, "grpcwire: stream closed"))
	<-s.done
	s.mu.Lock()
	for _, m := range s.queue {
		m.Free()
	}
	s.queue, s.queued = nil, 0
	s.mu.Unlock()
}
