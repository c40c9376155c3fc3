package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ncsn/ncsn/cmd/ncsn/internal/clustertest"
	"github.com/ncsn/ncsn/coordinator"
	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/worker"
)

// testCA makes a CA and a node certificate it signs (for servers and clients alike),
// written as PEM files in dir.
func testCA(t *testing.T, dir, name string) cluster.TLSFiles {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(file, typ string, der []byte) string {
		p := filepath.Join(dir, name+"-"+file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, nodeKey := key(), key()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	node := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " node"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	nodeDER, err := x509.CreateCertificate(rand.Reader, node, caCert, &nodeKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(nodeKey)
	return cluster.TLSFiles{Cert: write("node.pem", "CERTIFICATE", nodeDER), Key: write("node-key.pem", "EC PRIVATE KEY", keyDER),
		CA: write("ca.pem", "CERTIFICATE", caDER)}
}

// TestMutualTLS: a run whose coordinator and workers hold certificates of the cluster's CA
// trains to the end over TLS (coordinator and ring), and `ncsn status --tls-*` reads it;
// a node without TLS, or trusting or presenting another CA's certificate, is kept out.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	good, other := testCA(t, dir, "cluster"), testCA(t, dir, "stranger")
	opts := func(f cluster.TLSFiles) (func(*coordinator.Config), func(*worker.ClusterConfig)) {
		so, err := f.ServerOption()
		if err != nil {
			t.Fatal(err)
		}
		sc, err := f.ServerConfig()
		if err != nil {
			t.Fatal(err)
		}
		cc, err := f.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		return func(c *coordinator.Config) { c.ServerOptions = append(c.ServerOptions, so) },
			func(c *worker.ClusterConfig) {
				c.ServerTLS, c.ClientTLS = sc, cc
				c.JoinTimeout = 3 * time.Second
			}
	}
	coordTLS, workerTLS := opts(good)
	_, strangerTLS := opts(other)
	var log clustertest.Log
	rc := clustertest.Config(t, "run.steps=400", "cluster.min_workers=2")
	c := clustertest.StartCoordinator(t, rc, t.TempDir(), log.Logger(t), clustertest.CoordOptions{Tweak: coordTLS})

	plain := clustertest.StartWorker(t, c.Addr(), log.Logger(t), clustertest.WorkerOptions{Tweak: func(c *worker.ClusterConfig) { c.JoinTimeout = 3 * time.Second }})
	stranger := clustertest.StartWorker(t, c.Addr(), log.Logger(t), clustertest.WorkerOptions{Tweak: strangerTLS})
	for name, w := range map[string]*clustertest.Worker{"plaintext": plain, "another CA's": stranger} {
		if err := w.Wait(t, time.Minute); err == nil {
			t.Errorf("a %s worker ran to the end", name)
		}
	}
	// The stranger above rejects the coordinator itself. A forger trusts the cluster's CA
	// but presents the certificate of a look-alike CA (same name, so its client sends it
	// to a server that asks for the cluster CA's), so only the coordinator can refuse it.
	fake := testCA(t, t.TempDir(), "cluster")
	_, forgerTLS := opts(cluster.TLSFiles{Cert: fake.Cert, Key: fake.Key, CA: good.CA})
	forger := clustertest.StartWorker(t, c.Addr(), log.Logger(t), clustertest.WorkerOptions{Tweak: forgerTLS})
	// The worker's error is its last dial's, which may be a broken pipe rather than the
	// coordinator's alert; a bare TLS client that only reads sees the alert itself.
	fakeCert, err := tls.LoadX509KeyPair(fake.Cert, fake.Key)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", c.Addr(), &tls.Config{Certificates: []tls.Certificate{fakeCert}, InsecureSkipVerify: true,
		MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "unknown certificate authority") && !strings.Contains(err.Error(), "bad certificate") {
		t.Errorf("the coordinator to a client with a look-alike CA's certificate: %v, want it refused", err)
	}
	if err := forger.Wait(t, time.Minute); err == nil {
		t.Error("a worker with a look-alike CA's certificate ran to the end")
	}

	ws := []*clustertest.Worker{
		clustertest.StartWorker(t, c.Addr(), log.Logger(t), clustertest.WorkerOptions{Tweak: workerTLS}),
		clustertest.StartWorker(t, c.Addr(), log.Logger(t), clustertest.WorkerOptions{Tweak: workerTLS}),
	}
	c.WaitStep(t, 20, time.Minute)
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, clustertest.Secret, 0o600)
	out, errs, code := ncsn(t, "status", "--coordinator", c.Addr(), "--secret-file", secret,
		"--tls-cert", good.Cert, "--tls-key", good.Key, "--tls-ca", good.CA)
	if code != 0 || !strings.Contains(out, "2 workers") {
		t.Errorf("status over TLS: exit %d, %s%s", code, out, errs)
	}
	if _, _, code := ncsn(t, "status", "--coordinator", c.Addr(), "--secret-file", secret, "--timeout", "2s"); code == 0 {
		t.Error("status without TLS read a TLS coordinator")
	}
	if err := c.Wait(t, 2*time.Minute); err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	for i, w := range ws {
		if err := w.Wait(t, time.Minute); err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
}
