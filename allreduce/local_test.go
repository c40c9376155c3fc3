package allreduce

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// localName waits for r's Serve (on a goroutine of startRings) to open its Unix socket
// and returns the socket's name.
func localName(t *testing.T, r *Ring) string {
	t.Helper()
	var name string
	waitFor(t, "Serve's Unix socket", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		name = r.localName
		return name != ""
	})
	return name
}

func needUnix(t *testing.T) {
	if hostIdentity() == "" {
		t.Skip("no abstract Unix sockets on this system")
	}
}

// TestOtherHost: members whose host identities differ (other kernels or network namespaces)
// keep their streams on TCP, as do members whose kernel would grant a Unix socket too small
// a send buffer.
func TestOtherHost(t *testing.T) {
	needUnix(t)
	for name, ring := range map[string]func(int, *Ring){
		"other host":   func(i int, r *Ring) { r.host = fmt.Sprint("host-", i) }, // as the server sees it
		"small buffer": func(_ int, r *Ring) { r.minLocalBuf = 1 << 40 },
	} {
		t.Run(name, func(t *testing.T) {
			ms := startRings(t, 3, nil, ring)
			checkReduce(t, rand.New(rand.NewPCG(1, 2)), rings(ms), addrs(ms), Codec{}, 5000, 0)
			checkSockets(t, ms, "tcp")
		})
	}
}

func TestListenLocalRefusesSmallBuffers(t *testing.T) {
	needUnix(t)
	lis, _, err := listenLocal(1 << 40)
	if err == nil {
		lis.Close()
		t.Fatal("listenLocal accepted a send buffer of 1 TiB")
	}
	if !strings.Contains(err.Error(), "net.core.wmem_max") {
		t.Errorf("error %q does not say what to raise", err)
	}
}

// TestSilentServer: a neighbour that does not answer the host question (a stock gRPC server,
// which sends headers only with its first message) gets its stream over TCP after headerWait.
func TestSilentServer(t *testing.T) {
	needUnix(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan metadata.MD, 1)
	srv := grpc.NewServer()
	ringpb.RegisterRingServer(srv, silentSink{got: got})
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-done }()

	r, err := New(testConfig("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	s, err := r.transport.Open(context.Background(), lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < headerWait {
		t.Errorf("Open returned after %v, before the %v wait", d, headerWait)
	}
	if err := s.Send(&Piece{Run: "x", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	md := <-got
	if v := md.Get(hostKey); len(v) != 1 || v[0] != r.host {
		t.Errorf("%s = %q, want %q", hostKey, v, r.host)
	}
	s.CloseSend()
	s.Recv()
	if n := testutil.ToFloat64(r.m.opened.WithLabelValues("tcp")); n != 1 {
		t.Errorf("%v TCP streams opened, want 1", n)
	}
}

type silentSink struct {
	ringpb.UnimplementedRingServer
	got chan<- metadata.MD
}

func (s silentSink) Pipe(p ringpb.Ring_PipeServer) error {
	if _, err := p.Recv(); err != nil {
		return err
	}
	md, _ := metadata.FromIncomingContext(p.Context())
	s.got <- md
	for {
		if _, err := p.Recv(); err != nil {
			return nil
		}
	}
}

// TestLocalSocketAuthorized: the Unix socket refuses what the TCP port refuses, and a
// neighbour without the credentials never learns its name.
func TestLocalSocketAuthorized(t *testing.T) {
	needUnix(t)
	authorize := func(_, _ string, md metadata.MD) error {
		if v := md.Get("x-key"); len(v) != 1 || v[0] != "k" {
			return status.Error(codes.Unauthenticated, "bad key")
		}
		return nil
	}
	ms := startMembers(t, 1, func(c *Config) {
		c.Authorize = authorize
		c.Metadata = func(string) metadata.MD { return metadata.Pairs("x-key", "k") }
	})
	r := ms[0].ring
	name := localName(t, r)
	for _, tc := range []struct {
		target string
		md     metadata.MD
		code   codes.Code
	}{
		{"unix-abstract:" + strings.TrimPrefix(name, "@"), nil, codes.Unauthenticated},
		{"unix-abstract:" + strings.TrimPrefix(name, "@"), metadata.Pairs("x-key", "k"), codes.OK},
		{ms[0].addr, metadata.Pairs(hostKey, r.host), codes.Unauthenticated},
		{ms[0].addr, metadata.Pairs(hostKey, r.host, "x-key", "k"), codes.OK},
	} {
		conn, err := grpc.NewClient(tc.target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), tc.md), 10*time.Second)
		s, err := ringpb.NewRingClient(conn).Pipe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tc.code != codes.OK:
			if _, err := s.Recv(); status.Code(err) != tc.code {
				t.Errorf("%s with %v: %v, want %v", tc.target, tc.md, err, tc.code)
			}
			if h, _ := s.Header(); len(h.Get(localKey)) > 0 {
				t.Errorf("%s with %v: refused, yet told %s = %q", tc.target, tc.md, localKey, h.Get(localKey))
			}
		case strings.HasPrefix(tc.target, "unix"):
			s.CloseSend()
			if _, err := s.Recv(); err != io.EOF {
				t.Errorf("%s with %v: %v, want a clean end", tc.target, tc.md, err)
			}
		default:
			if h, _ := s.Header(); len(h.Get(localKey)) != 1 || h.Get(localKey)[0] != name {
				t.Errorf("authorized neighbour told %s = %q, want %q", localKey, h.Get(localKey), name)
			}
		}
		cancel()
		conn.Close()
	}
}

// TestSameHostTLS: under TLS, same-host streams move to Unix sockets and stay under TLS
// there: a plaintext client of the socket gets nothing through.
func TestSameHostTLS(t *testing.T) {
	needUnix(t)
	server, client := testTLS(t)
	ms := startMembers(t, 3, func(c *Config) { c.ServerTLS, c.ClientTLS = server, client })
	checkReduce(t, rand.New(rand.NewPCG(3, 4)), rings(ms), addrs(ms), Codec{}, 5000, 0)
	checkSockets(t, ms, "unix")

	name := localName(t, ms[0].ring)
	conn, err := grpc.NewClient("unix-abstract:"+strings.TrimPrefix(name, "@"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := ringpb.NewRingClient(conn).Pipe(ctx)
	if err == nil {
		s.CloseSend()
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client of the Unix socket: %v, want Unavailable", err)
	}
}

// testTLS returns a server's TLS for 127.0.0.1 and a client's that trusts it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ring test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS13},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
}
