package grpcwire

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests speak grpc-go's interop TestService.FullDuplexCall: every request's payload is
// answered with a response whose payload is the request's SHA-256, and the stream ends
// with a status that tells what the server saw.
const duplex = testgrpc.TestService_FullDuplexCall_FullMethodName

func newRequest(body []byte) mem.BufferSlice {
	b, err := proto.Marshal(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}})
	if err != nil {
		panic(err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}
}

func digest(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// endStatus is the status the handlers end with, after n messages: its message holds what
// percent-encoding must carry.
func endStatus(n int, md metadata.MD) error {
	return status.Errorf(codes.FailedPrecondition, "saw %d messages; token %v; blob %q; 100%% ünïcode\n", n, md.Get("x-token"), md.Get("blob-bin"))
}

// hashLoop answers every request with its payload's digest, then ends with endStatus.
func hashLoop(ctx context.Context, recv func() (*testgrpc.StreamingOutputCallRequest, error), send func(*testgrpc.StreamingOutputCallResponse) error) error {
	md, _ := metadata.FromIncomingContext(ctx)
	for n := 0; ; n++ {
		req, err := recv()
		if errors.Is(err, io.EOF) {
			return endStatus(n, md)
		}
		if err != nil {
			return err
		}
		if err := send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: digest(req.GetPayload().GetBody())}}); err != nil {
			return err
		}
	}
}

// hashHandler is hashLoop served by grpcwire.
func hashHandler(st *ServerStream) error {
	recv := func() (*testgrpc.StreamingOutputCallRequest, error) {
		m, err := st.RecvMsg()
		if err != nil {
			return nil, err
		}
		defer m.Free()
		req := &testgrpc.StreamingOutputCallRequest{}
		if err := proto.Unmarshal(m.Materialize(), req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "bad request: %v", err)
		}
		return req, nil
	}
	send := func(resp *testgrpc.StreamingOutputCallResponse) error {
		b, err := proto.Marshal(resp)
		if err != nil {
			return err
		}
		return st.SendMsg(mem.BufferSlice{mem.SliceBuffer(b)})
	}
	return hashLoop(st.Context(), recv, send)
}

// hashService is hashLoop served by grpc-go.
type hashService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (hashService) FullDuplexCall(s testgrpc.TestService_FullDuplexCallServer) error {
	return hashLoop(s.Context(), s.Recv, s.Send)
}

var quiet = slog.New(slog.DiscardHandler)

func serve(t *testing.T, cfg ServerConfig) string {
	t.Helper()
	if cfg.Handlers == nil {
		cfg.Handlers = map[string]Handler{duplex: hashHandler}
	}
	cfg.Logger = quiet
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

func serveGRPCGo(t *testing.T, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(s, hashService{})
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

var sizes = []int{0, 1, 1000, 70_000, 1 << 20, 3<<20 + 7}

func body(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed)
	}
	return b
}

var testMD = metadata.Pairs("x-token", "s3cret", "blob-bin", "\x00\x01\xff")

func wantEnd(n int) string {
	return status.Convert(endStatus(n, testMD)).Message()
}

// exchange runs the sizes through a grpcwire client stream and checks every answer and the
// final status.
func exchange(t *testing.T, s *ClientStream) {
	t.Helper()
	for i, n := range sizes {
		b := body(n, i)
		if err := s.SendMsg(newRequest(b)); err != nil {
			t.Fatalf("send %d bytes: %v", n, err)
		}
		m, err := s.RecvMsg()
		if err != nil {
			t.Fatalf("receive answer %d: %v", i, err)
		}
		var resp testgrpc.StreamingOutputCallResponse
		if err := proto.Unmarshal(m.Materialize(), &resp); err != nil {
			t.Fatal(err)
		}
		m.Free()
		if !bytes.Equal(resp.GetPayload().GetBody(), digest(b)) {
			t.Fatalf("answer %d: wrong digest", i)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	_, err := s.RecvMsg()
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != wantEnd(len(sizes)) {
		t.Fatalf("end: %v, want FailedPrecondition %q", err, wantEnd(len(sizes)))
	}
}

// TestClientAgainstGRPCGo: a grpcwire client and a grpc-go server (16 KiB frames, 64 KiB
// windows) exchange messages of every size, metadata and a percent-encoded status.
func TestClientAgainstGRPCGo(t *testing.T) {
	addr := serveGRPCGo(t)
	s, err := Open(context.Background(), addr, duplex, testMD, DialConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exchange(t, s)
}

// TestServerAgainstGRPCGo: a grpc-go client and a grpcwire server, likewise.
func TestServerAgainstGRPCGo(t *testing.T) {
	addr := serve(t, ServerConfig{})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.NewOutgoingContext(context.Background(), testMD)
	// Two streams, one after the other, on the one connection.
	for range 2 {
		s, err := testgrpc.NewTestServiceClient(conn).FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range sizes {
			b := body(n, i)
			if err := s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: b}}); err != nil {
				t.Fatalf("send %d bytes: %v", n, err)
			}
			resp, err := s.Recv()
			if err != nil {
				t.Fatalf("answer %d: %v", i, err)
			}
			if !bytes.Equal(resp.GetPayload().GetBody(), digest(b)) {
				t.Fatalf("answer %d: wrong digest", i)
			}
		}
		s.CloseSend()
		_, err = s.Recv()
		if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != wantEnd(len(sizes)) {
			t.Fatalf("end: %v, want FailedPrecondition %q", err, wantEnd(len(sizes)))
		}
	}
}

// TestOwnEnds: both ends grpcwire, with the smallest window HTTP/2 allows, so that every
// large message waits for window updates many times.
func TestOwnEnds(t *testing.T) {
	for _, w := range []uint32{defaultWindow, DefaultWindow} {
		t.Run(fmt.Sprint(w), func(t *testing.T) {
			addr := serve(t, ServerConfig{Window: w})
			s, err := Open(context.Background(), addr, duplex, testMD, DialConfig{Window: w})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			exchange(t, s)
		})
	}
}

// TestRefusals: what ends a stream before or during its handler reaches the client as the
// gRPC status a grpc-go server would give.
func TestRefusals(t *testing.T) {
	authorize := func(_, _ string, md metadata.MD) error {
		if v := md.Get("x-token"); len(v) != 1 || v[0] != "s3cret" {
			return status.Error(codes.Unauthenticated, "no token")
		}
		return nil
	}
	for _, tc := range []struct {
		name   string
		method string
		md     metadata.MD
		body   int
		code   codes.Code
	}{
		{"unknown method", "/grpc.testing.TestService/Nope", testMD, 1, codes.Unimplemented},
		{"unauthenticated", duplex, nil, 1, codes.Unauthenticated},
		{"message too large", duplex, testMD, 2 << 20, codes.ResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, ServerConfig{Authorize: authorize, MaxRecvMsgSize: 1 << 20})
			s, err := Open(context.Background(), addr, tc.method, tc.md, DialConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.SendMsg(newRequest(make([]byte, tc.body))) // may fail once the server has ended it
			if _, err := s.RecvMsg(); status.Code(err) != tc.code {
				t.Errorf("got %v, want code %v", err, tc.code)
			}
		})
	}
}

// TestCancel: a client that cancels ends the server's stream with an error, and the other
// way round: a server that stops (crash) ends the client's with Unavailable.
func TestCancel(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		started, ended := make(chan struct{}), make(chan error, 1)
		addr := serve(t, ServerConfig{Handlers: map[string]Handler{duplex: func(st *ServerStream) error {
			close(started)
			_, err := st.RecvMsg()
			ended <- err
			return err
		}}})
		ctx, cancel := context.WithCancel(context.Background())
		s, err := Open(ctx, addr, duplex, nil, DialConfig{})
		if err != nil {
			t.Fatal(err)
		}
		<-started // else the cancelled connection may never reach the handler
		cancel()
		if _, err := s.RecvMsg(); status.Code(err) != codes.Canceled {
			t.Errorf("client: %v, want Canceled", err)
		}
		if err := <-ended; err == nil || errors.Is(err, io.EOF) {
			t.Errorf("server: %v, want an error", err)
		}
		s.Close()
	})
	t.Run("server", func(t *testing.T) {
		s, err := NewServer(ServerConfig{Logger: quiet, Handlers: map[string]Handler{duplex: hashHandler}})
		if err != nil {
			t.Fatal(err)
		}
		lis, _ := net.Listen("tcp", "127.0.0.1:0")
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, lis) }()
		cs, err := Open(context.Background(), lis.Addr().String(), duplex, nil, DialConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if err := cs.SendMsg(newRequest([]byte("x"))); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.RecvMsg(); err != nil {
			t.Fatal(err)
		}
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := cs.RecvMsg(); status.Code(err) != codes.Unavailable {
			t.Errorf("client: %v, want Unavailable", err)
		}
		if err := cs.SendMsg(newRequest([]byte("y"))); err == nil {
			t.Error("send after the server stopped succeeded")
		}
	})
}

// fakeServer accepts one connection and plays the server's side of HTTP/2 by hand: it
// advertises maxFrame and a window of 16 MiB, and returns the DATA frames' lengths once
// the client half-closes, ending the stream with OK.
func fakeServer(t *testing.T, maxFrame uint32) (string, <-chan []int) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []int, 1)
	go func() {
		defer lis.Close()
		nc, err := lis.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		c := newConn(nc, maxFrameLimit, maxWindow, 1<<30, mem.DefaultBufferPool())
		var pre [len(clientPreface)]byte
		io.ReadFull(c.br, pre[:])
		c.writeControl(func(b []byte) []byte {
			b = appendSettings(b, setting{settingMaxFrameSize, maxFrame}, setting{settingInitialWindowSize, 16 << 20})
			return appendWindowUpdate(b, 0, 16<<20)
		})
		var lens []int
		for {
			h, err := c.readFrameHeader()
			if err != nil {
				return
			}
			switch h.typ {
			case frameData:
				lens = append(lens, int(h.length))
				c.br.Discard(int(h.length))
				if h.has(flagEndStream) {
					c.writeHeaders(h.stream, append(responseFields("", nil), trailerFields(status.New(codes.OK, ""))...), true)
					out <- lens
					io.Copy(io.Discard, c.br)
					return
				}
			case frameHeaders:
				c.readHeaderBlock(h)
			default:
				c.readPayload(h)
			}
		}
	}()
	return lis.Addr().String(), out
}

// TestLargeFrames: a message goes out in frames as large as the server allows.
func TestLargeFrames(t *testing.T) {
	addr, lens := fakeServer(t, 1<<20)
	s, err := Open(context.Background(), addr, duplex, nil, DialConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := make([]byte, 3<<20)
	if err := s.SendMsg(mem.BufferSlice{mem.SliceBuffer(msg[:1<<20]), mem.SliceBuffer(msg[1<<20:])}); err != nil {
		t.Fatal(err)
	}
	s.CloseSend()
	if _, err := s.RecvMsg(); err != io.EOF {
		t.Fatalf("end: %v, want EOF", err)
	}
	want := []int{1 << 20, 1 << 20, 1 << 20, msgPrefixLen, 0}
	if got := <-lens; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("DATA frames %v, want %v", got, want)
	}
}

// TestTLS: over TLS, grpcwire's client and grpc-go's reach a grpcwire server; a plaintext
// client does not.
func TestTLS(t *testing.T) {
	server, client := testTLS(t)
	addr := serve(t, ServerConfig{TLS: server})
	s, err := Open(context.Background(), addr, duplex, testMD, DialConfig{TLS: client})
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, s)
	s.Close()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(client)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gs, err := testgrpc.NewTestServiceClient(conn).FullDuplexCall(metadata.NewOutgoingContext(context.Background(), testMD))
	if err != nil {
		t.Fatal(err)
	}
	if err := gs.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("tls")}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := gs.Recv(); err != nil || !bytes.Equal(resp.GetPayload().GetBody(), digest([]byte("tls"))) {
		t.Fatalf("grpc-go over TLS: %v", err)
	}
	gs.CloseSend()
	if _, err := gs.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("grpc-go over TLS, end: %v", err)
	}

	ps, err := Open(context.Background(), addr, duplex, nil, DialConfig{})
	if err == nil {
		_, err = ps.RecvMsg()
		ps.Close()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client: %v, want Unavailable", err)
	}
}

func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "grpcwire test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS13},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
}

// Seeds for the fuzzers: a valid exchange's frames.
func seedFrames() [][]byte {
	var ss [][]byte
	hdr := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	enc := newConn(nil, defaultMaxFrame, defaultWindow, 1<<20, mem.DefaultBufferPool())
	enc.hbuf.Reset()
	for _, f := range requestFields("http", "x", duplex, "", testMD) {
		enc.henc.WriteField(f)
	}
	block := append([]byte(nil), enc.hbuf.Bytes()...)
	msg := append([]byte{0, 0, 0, 0, 3}, 10, 1, 'a')
	settings := appendSettings(nil, setting{settingInitialWindowSize, 1 << 20})
	headers := append(appendFrameHeader(nil, frameHeader{length: uint32(len(block)), typ: frameHeaders, flags: flagEndHeaders, stream: 1}), block...)
	data := append(appendFrameHeader(nil, frameHeader{length: uint32(len(msg)), typ: frameData, stream: 1}), msg...)
	end := appendFrameHeader(nil, frameHeader{typ: frameData, flags: flagEndStream, stream: 1})
	ping := append(appendFrameHeader(nil, frameHeader{length: 8, typ: framePing}), make([]byte, 8)...)
	ss = append(ss, hdr(settings, headers, data, end), hdr(settings, ping, headers, data, data, end),
		hdr(settings, headers, appendWindowUpdate(nil, 1, 100), appendRSTStream(nil, 1, errCodeCancel)))
	return ss
}

// FuzzServer feeds a server connection arbitrary frames after the client preface: it must
// neither panic nor hang, nor hand its handler more than a message's limit.
func FuzzServer(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	s, err := NewServer(ServerConfig{Logger: quiet, MaxRecvMsgSize: 1 << 16, Handlers: map[string]Handler{duplex: func(st *ServerStream) error {
		for {
			m, err := st.RecvMsg()
			if err != nil {
				return err
			}
			if m.Len() > 1<<16 {
				panic("message above the limit")
			}
			st.SendMsg(m)
		}
	}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		done := make(chan struct{})
		go func() { defer close(done); s.serveConn(b); b.Close() }()
		go io.Copy(io.Discard, a)
		a.Write([]byte(clientPreface))
		a.Write(in)
		a.Close()
		<-done
	})
}

// FuzzClient feeds a client stream arbitrary frames from its server.
func FuzzClient(f *testing.F) {
	ok := appendSettings(nil)
	resp := newConn(nil, defaultMaxFrame, defaultWindow, 1<<20, mem.DefaultBufferPool())
	resp.hbuf.Reset()
	for _, fl := range append(responseFields("", nil), trailerFields(status.New(codes.Aborted, "x%y"))...) {
		resp.henc.WriteField(fl)
	}
	block := resp.hbuf.Bytes()
	f.Add(append(ok, append(appendFrameHeader(nil, frameHeader{length: uint32(len(block)), typ: frameHeaders, flags: flagEndHeaders | flagEndStream, stream: 1}), block...)...))
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		go io.Copy(io.Discard, a)
		go func() { a.Write(in); a.Close() }()
		s, err := open(context.Background(), b, "http", "x", duplex, nil, DialConfig{Window: defaultWindow, MaxRecvMsgSize: 1 << 16, BufferPool: mem.DefaultBufferPool()})
		if err != nil {
			return
		}
		for {
			m, err := s.RecvMsg()
			if err != nil {
				break
			}
			if m.Len() > 1<<16 {
				panic("message above the limit")
			}
			m.Free()
		}
		s.Close()
	})
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, m := range []string{"", "plain", "100%", "ünï\ncode\x00", "%zz%4"} {
		if got := decodeGRPCMessage(encodeGRPCMessage(m)); got != m {
			t.Errorf("grpc-message %q came back %q", m, got)
		}
	}
	req, err := parseRequest(requestFields("http", "a", duplex, "proto", testMD))
	if err != nil {
		t.Fatal(err)
	}
	if req.method != duplex || fmt.Sprint(req.md.Get("blob-bin")) != fmt.Sprint(testMD.Get("blob-bin")) || req.md.Get("x-token")[0] != "s3cret" {
		t.Errorf("request %+v", req)
	}
	var b [frameHeaderLen]byte
	h := frameHeader{length: 1<<24 - 1, typ: frameData, flags: flagEndStream, stream: 1<<31 - 1}
	if got := parseFrameHeader(appendFrameHeader(b[:0], h)); got != h {
		t.Errorf("frame header %v came back %v", h, got)
	}
}

// TestHeaderListBounded: a small header block whose indexed fields decode to more than the
// limit is refused (an HPACK bomb), and one under it decodes.
func TestHeaderListBounded(t *testing.T) {
	for _, tc := range []struct {
		refs int
		ok   bool
	}{{10, true}, {100, false}} {
		// A literal field with incremental indexing and a new name "x" (RFC 7541 §6.2.1),
		// its 4,000-byte value's length as a 7-bit prefix integer (§5.1).
		block := []byte{0x40, 1, 'x', 0x7f, byte((4000-127)&0x7f | 0x80), byte((4000 - 127) >> 7)}
		block = append(block, bytes.Repeat([]byte{'v'}, 4000)...)
		for range tc.refs {
			block = append(block, 0x80|62) // the dynamic table's newest entry
		}
		frame := append(appendFrameHeader(nil, frameHeader{length: uint32(len(block)), typ: frameHeaders, flags: flagEndHeaders, stream: 1}), block...)
		c := newConn(nil, maxFrameLimit, defaultWindow, 1<<20, mem.DefaultBufferPool())
		c.br = bufio.NewReader(bytes.NewReader(frame))
		h, err := c.readFrameHeader()
		if err != nil {
			t.Fatal(err)
		}
		fields, err := c.readHeaderBlock(h)
		if tc.ok != (err == nil) || tc.ok && len(fields) != tc.refs+1 {
			t.Errorf("%d references: %d fields, %v", tc.refs, len(fields), err)
		}
	}
}

var headerMD = metadata.Pairs("x-node", "n1", "id-bin", "\x00\xfe")

func checkHeader(t *testing.T, md metadata.MD, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("Header: %v", err)
	}
	if got := md.Get("x-node"); len(got) != 1 || got[0] != "n1" {
		t.Errorf("x-node %q, want n1", got)
	}
	if got := md.Get("id-bin"); len(got) != 1 || got[0] != "\x00\xfe" {
		t.Errorf("id-bin %q, want \\x00\\xfe", got)
	}
}

type headerService struct{ hashService }

func (headerService) FullDuplexCall(s testgrpc.TestService_FullDuplexCallServer) error {
	if err := s.SendHeader(headerMD); err != nil {
		return err
	}
	return hashLoop(s.Context(), s.Recv, s.Send)
}

// TestResponseHeader: metadata sent with the response headers before any message reaches
// the client, between grpcwire and grpc-go both ways; a refused stream's Header is its status.
func TestResponseHeader(t *testing.T) {
	withHeader := func(st *ServerStream) error {
		if err := st.SendHeader(headerMD); err != nil {
			return err
		}
		if err := st.SendHeader(nil); err == nil {
			return status.Error(codes.Internal, "second SendHeader succeeded")
		}
		return hashHandler(st)
	}
	own := serve(t, ServerConfig{Handlers: map[string]Handler{duplex: withHeader}})

	t.Run("grpcwire to grpcwire", func(t *testing.T) {
		s, err := Open(context.Background(), own, duplex, testMD, DialConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		md, err := s.Header(context.Background()) // before any message is sent
		checkHeader(t, md, err)
		exchange(t, s)
		md, err = s.Header(context.Background()) // after the end, still there
		checkHeader(t, md, err)
	})
	t.Run("grpc-go to grpcwire", func(t *testing.T) {
		conn, err := grpc.NewClient(own, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		s, err := testgrpc.NewTestServiceClient(conn).FullDuplexCall(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		md, err := s.Header()
		checkHeader(t, md, err)
		s.CloseSend()
		if _, err := s.Recv(); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("end: %v", err)
		}
	})
	t.Run("grpcwire to grpc-go", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(srv, headerService{})
		done := make(chan struct{})
		go func() { defer close(done); srv.Serve(lis) }()
		defer func() { srv.Stop(); <-done }()
		s, err := Open(context.Background(), lis.Addr().String(), duplex, testMD, DialConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		md, err := s.Header(context.Background())
		checkHeader(t, md, err)
		exchange(t, s)
	})
	t.Run("no header yet", func(t *testing.T) {
		s, err := Open(context.Background(), serveGRPCGo(t), duplex, testMD, DialConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := s.Header(ctx); err != context.Canceled {
			t.Fatalf("Header: %v, want Canceled", err)
		}
		exchange(t, s) // the stream goes on
	})
	t.Run("refused", func(t *testing.T) {
		addr := serve(t, ServerConfig{Authorize: func(string, string, metadata.MD) error {
			return status.Error(codes.Unauthenticated, "no")
		}})
		s, err := Open(context.Background(), addr, duplex, testMD, DialConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if md, err := s.Header(context.Background()); status.Code(err) != codes.Unauthenticated || md != nil {
			t.Fatalf("Header: %v, %v; want Unauthenticated", md, err)
		}
	})
}

// TestDial: a stream over a Unix socket, with the server's name as the authority.
func TestDial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var authority string
	srv, err := NewServer(ServerConfig{Logger: quiet, Handlers: map[string]Handler{duplex: func(st *ServerStream) error {
		authority = st.req.authority
		return hashHandler(st)
	}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	s, err := Open(context.Background(), "node-a:7000", duplex, testMD, DialConfig{Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, s)
	s.Close()
	if authority != "node-a:7000" {
		t.Errorf("authority %q, want node-a:7000", authority)
	}
}
