package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLSFiles names the PEM files of a node's TLS: its certificate and key, and the CA that
// signs every node's certificate. With a CA, a server asks its clients for certificates
// the CA signed (mutual TLS), and a client accepts only servers whose certificate the CA
// signed. Host names are not checked: ring members reach each other at addresses
// (often IPs) that a cluster's certificates cannot know in advance; the CA is the trust.
type TLSFiles struct {
	Cert, Key, CA string
}

// Enabled reports whether any file is set.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

func (f TLSFiles) load() (*tls.Certificate, *x509.CertPool, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, nil, errors.New("cluster: TLS needs both --tls-cert and --tls-key")
	}
	var cert *tls.Certificate
	if f.Cert != "" {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: TLS certificate: %w", err)
		}
		cert = &c
	}
	var pool *x509.CertPool
	if f.CA != "" {
		b, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: TLS CA: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, nil, fmt.Errorf("cluster: TLS CA %s holds no PEM certificate", f.CA)
		}
	}
	return cert, pool, nil
}

// verifyWith checks a server's chain against pool for server use, without host names
// (the client sets InsecureSkipVerify, so crypto/tls checks nothing itself).
func verifyWith(pool *x509.CertPool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("cluster: the server sent no TLS certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("cluster: server certificate: %w", err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return fmt.Errorf("cluster: server certificate not signed by the cluster's CA: %w", err)
		}
		return nil
	}
}

// ServerOption is the gRPC server credentials of ServerConfig.
func (f TLSFiles) ServerOption() (grpc.ServerOption, error) {
	c, err := f.ServerConfig()
	if err != nil {
		return nil, err
	}
	return grpc.Creds(credentials.NewTLS(c)), nil
}

// ServerConfig is the server TLS of f: a certificate and key are needed; with a CA, clients
// must present a certificate it signed.
func (f TLSFiles) ServerConfig() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	if cert == nil {
		return nil, errors.New("cluster: a TLS server needs --tls-cert and --tls-key")
	}
	c := &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS13}
	if pool != nil {
		// crypto/tls checks the client's chain against pool for client use (no host names).
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	return c, nil
}

// DialOption is the gRPC client credentials of ClientConfig.
func (f TLSFiles) DialOption() (grpc.DialOption, error) {
	c, err := f.ClientConfig()
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(c)), nil
}

// ClientConfig is the client TLS of f: a CA is needed to trust servers; a certificate and
// key, if set, are presented to servers that ask (mutual TLS).
func (f TLSFiles) ClientConfig() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, errors.New("cluster: a TLS client needs --tls-ca to trust the servers")
	}
	c := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, // the chain is checked below, without host names
		VerifyPeerCertificate: verifyWith(pool)}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c, nil
}
