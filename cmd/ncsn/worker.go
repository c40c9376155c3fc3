package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/worker"
)

func init() {
	commands["worker"] = command{
		summary: "join a distributed training run as a worker",
		run:     runWorker,
	}
}

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	join := fs.String("join", "", "the coordinator's gRPC address HOST:PORT (required)")
	listen := fs.String("listen", "", "address of this worker's ring service, port 0 for any free port (default: 127.0.0.1:0 when --join is on this host, else :0)")
	advertise := fs.String("advertise", "", "ring address other workers dial (default: the listen address; an unspecified host becomes this host's address towards the coordinator)")
	gossip := fs.String("gossip", "", "memberlist bind address (default: the ring host, any free port)")
	gossipAdv := fs.String("gossip-advertise", "", "gossip address other nodes reach this one at")
	dataRoot := fs.String("data-root", "", "folder holding the dataset files on this host (replaces data.path)")
	runID := fs.String("run", "", "refuse to join a coordinator whose run.id differs")
	secretFile := fs.String("secret-file", "", "file holding the cluster secret (default $"+cluster.SecretEnv+", else a built-in secret fit only for one host)")
	insecure := fs.Bool("insecure", false, "listen beyond loopback with the built-in secret, which anyone can read: any host that reaches this worker could feed it gradients")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on this address")
	joinTimeout := fs.Duration("join-timeout", 30*time.Second, "give up if the coordinator cannot be joined within this time")
	rejoinTimeout := fs.Duration("rejoin-timeout", 2*time.Minute, "after losing the coordinator, give up re-joining after this time")
	tf := addTLSFlags(fs)
	lf := addLogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn worker --join HOST:PORT [--listen ADDR] [--gossip ADDR] [--data-root DIR]\n\nTrains its share of every step until the coordinator reports the run complete.")
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *join == "" || fs.NArg() > 0 {
		return usageError{fmt.Errorf("--join HOST:PORT is required (and no other arguments)")}
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	if *listen == "" {
		*listen = ":0"
		if cluster.Loopback(*join) {
			*listen = "127.0.0.1:0"
		}
	}
	secret, def, err := cluster.LoadSecret(*secretFile)
	if err != nil {
		return err
	}
	if err := cluster.CheckExposure(def, *insecure, *listen, *gossip); err != nil {
		return usageError{err}
	}
	serverTLS, clientTLS, err := tf.configs()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	w, err := worker.NewCluster(worker.ClusterConfig{
		ServerTLS: serverTLS, ClientTLS: clientTLS,
		Join: *join, Listen: *listen, Advertise: *advertise, Gossip: *gossip, GossipAdvertise: *gossipAdv,
		Secret: secret, Version: version, RunID: *runID, DataRoot: *dataRoot, Logger: log, Registerer: reg,
		JoinTimeout: *joinTimeout, RejoinTimeout: *rejoinTimeout,
	})
	if err != nil {
		return err
	}
	defer w.Close()
	wait, err := serveMetrics(ctx, *metrics, reg, log)
	if err != nil {
		return err
	}
	defer wait()
	return w.Run(ctx)
}
