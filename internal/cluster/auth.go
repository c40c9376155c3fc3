// Package cluster owns what the coordinator and the workers share about being one
// cluster: the secret (gRPC authentication, gossip encryption) and memberlist setup.
package cluster

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// DefaultSecret is used when neither a secret file nor NCSN_SECRET is given: fine for
// processes on one host, not for a network anyone else can reach.
const DefaultSecret = "ncsn-local-default-secret"

// SecretEnv is the environment variable holding the cluster secret.
const SecretEnv = "NCSN_SECRET"

// LoadSecret reads the secret from file (surrounding white space trimmed) if file is not
// empty, else from $NCSN_SECRET, else returns DefaultSecret. fromDefault tells which.
func LoadSecret(file string) (secret []byte, fromDefault bool, err error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, false, fmt.Errorf("cluster: secret: %w", err)
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return nil, false, fmt.Errorf("cluster: secret file %s is empty", file)
		}
		return b, false, nil
	}
	if s := os.Getenv(SecretEnv); s != "" {
		return []byte(s), false, nil
	}
	return []byte(DefaultSecret), true, nil
}

// GossipKey is memberlist's AES-256 key derived from the secret.
func GossipKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("ncsn gossip key v1"))
	return m.Sum(nil)
}

// Auth authenticates gRPC calls with the cluster secret: the client puts a token
// "<unix-ms>.<hex HMAC(method, time)>" in the call's metadata and the server checks it.
// A node without the secret can neither call nor be called.
type Auth struct {
	key []byte
	now func() time.Time
	// Log, if set, records refused calls (the caller sees the same reason as its error).
	Log *slog.Logger
}

// authHeader is the metadata key of the token.
const authHeader = "ncsn-auth"

// MaxSkew bounds the clock difference (and replay window) accepted for a token.
const MaxSkew = 5 * time.Minute

// NewAuth derives the HMAC key from secret.
func NewAuth(secret []byte) (*Auth, error) {
	if len(secret) == 0 {
		return nil, errors.New("cluster: empty secret")
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("ncsn grpc key v1"))
	return &Auth{key: m.Sum(nil), now: time.Now}, nil
}

func (a *Auth) mac(method, ts string) string {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(method))
	m.Write([]byte{0})
	m.Write([]byte(ts))
	return hex.EncodeToString(m.Sum(nil))
}

func (a *Auth) token(method string) string {
	ts := strconv.FormatInt(a.now().UnixMilli(), 10)
	return ts + "." + a.mac(method, ts)
}

func (a *Auth) check(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	return a.checkMD(md, method)
}

func (a *Auth) checkMD(md metadata.MD, method string) error {
	v := md.Get(authHeader)
	if len(v) != 1 {
		return status.Error(codes.Unauthenticated, "no cluster credentials: the caller must be started with the cluster secret (--secret-file or NCSN_SECRET)")
	}
	ts, sum, ok := strings.Cut(v[0], ".")
	ms, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil {
		return status.Error(codes.Unauthenticated, "malformed cluster credentials")
	}
	if !hmac.Equal([]byte(sum), []byte(a.mac(method, ts))) {
		return status.Error(codes.Unauthenticated, "wrong cluster secret: the caller's secret differs from this node's (check --secret-file / NCSN_SECRET on both sides)")
	}
	if d := a.now().Sub(time.UnixMilli(ms)); d > MaxSkew || d < -MaxSkew {
		return status.Errorf(codes.Unauthenticated, "cluster credentials %v off this node's clock (max %v)", d.Round(time.Second), MaxSkew)
	}
	return nil
}

func (a *Auth) refused(ctx context.Context, method string, err error) {
	from := "unknown"
	if p, ok := peer.FromContext(ctx); ok {
		from = p.Addr.String()
	}
	a.logRefused(from, method, err)
}

func (a *Auth) logRefused(from, method string, err error) {
	if a.Log == nil {
		return
	}
	a.Log.Warn("refused unauthenticated call", "method", method, "from", from, "reason", status.Convert(err).Message())
}

// ServerOptions are interceptors that refuse calls without a valid token.
func (a *Auth) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := a.check(ctx, info.FullMethod); err != nil {
				a.refused(ctx, info.FullMethod, err)
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := a.check(ss.Context(), info.FullMethod); err != nil {
				a.refused(ss.Context(), info.FullMethod, err)
				return err
			}
			return h(srv, ss)
		}),
	}
}

// DialOptions are interceptors that add a token to every call.
func (a *Auth) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, authHeader, a.token(method)), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, authHeader, a.token(method)), desc, cc, method, opts...)
		}),
	}
}

// Metadata is the token a call to method carries, for transports that are not grpc-go's
// (the ring's streams).
func (a *Auth) Metadata(method string) metadata.MD {
	return metadata.Pairs(authHeader, a.token(method))
}

// Authorize checks the token a call to method carries in md, for transports that are not
// grpc-go's; it returns a gRPC status error, and logs the refusal with from (the caller's
// address, if known).
func (a *Auth) Authorize(from, method string, md metadata.MD) error {
	err := a.checkMD(md, method)
	if err != nil {
		a.logRefused(from, method, err)
	}
	return err
}
