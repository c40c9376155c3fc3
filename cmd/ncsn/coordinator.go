package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ncsn/ncsn/coordinator"
	"github.com/ncsn/ncsn/internal/cluster"
)

func init() {
	commands["coordinator"] = command{
		summary: "run a distributed training run's coordinator (membership, commits, checkpoints)",
		run:     runCoordinator,
	}
}

func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rcf := addRunConfigFlags(fs)
	listen := fs.String("listen", ":7070", "gRPC address workers join")
	gossip := fs.String("gossip", ":7946", "memberlist (gossip) bind address")
	gossipAdv := fs.String("gossip-advertise", "", "gossip address other nodes reach this one at (containers, NAT)")
	out := fs.String("out", "ncsn-out", "run folder: checkpoints in DIR/checkpoints; an existing run there is resumed")
	secretFile := fs.String("secret-file", "", "file holding the cluster secret (default $"+cluster.SecretEnv+", else a built-in secret fit only for one host)")
	insecure := fs.Bool("insecure", false, "listen beyond loopback with the built-in secret, which anyone can read: any host that reaches the port could join and send gradients")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on this address")
	addrFile := fs.String("addr-file", "", "once listening, write the gRPC and gossip addresses to this file as JSON (for scripts and launchers)")
	doneGrace := fs.Duration("done-grace", 10*time.Second, "after the run, how long to wait for workers to hang up")
	tf := addTLSFlags(fs)
	resume := fs.String("resume", "", resumeHelp)
	lf := addLogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn coordinator --config FILE [--set key=value]... [--listen ADDR] [--gossip ADDR] [--out DIR] [--resume FILE|DIR]\n\nServes the run until its last step is committed and checkpointed, then exits 0.\nEvery run.sample_every steps a goroutine of this process draws run.snapshot_samples samples\nfrom the EMA weights into DIR/snapshots; the commits do not wait for it.")
		printFlags(fs)
		fmt.Fprint(stderr, configDefaultsHelp)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	rc, done, err := rcf.loadRun(stdout, log)
	if err != nil || done {
		return err
	}
	secret, def, err := cluster.LoadSecret(*secretFile)
	if err != nil {
		return err
	}
	if err := cluster.CheckExposure(def, *insecure, *listen, *gossip); err != nil {
		return usageError{err}
	}
	if def {
		log.Warn("using the built-in cluster secret: fine on one host; set --secret-file or " + cluster.SecretEnv + " on a network")
	}
	reg := prometheus.NewRegistry()
	run, err := openRunFolder(*out, *resume, &rc, log)
	if err != nil {
		return err
	}
	defer run.close()
	onCommit := func(p coordinator.Progress) { run.record(p.Step, p.Loss, p.PerLevel) }
	serverOpts, err := tf.server()
	if err != nil {
		return err
	}
	cc := coordinator.Config{
		ServerOptions: serverOpts,
		Run:           rc, Out: *out, Listen: *listen, Gossip: *gossip, GossipAdvertise: *gossipAdv,
		Secret: secret, Version: version, Logger: log, Registerer: reg, DoneGrace: *doneGrace,
		OnCommit: onCommit,
	}
	// Once the run is complete the snapshot in progress is abandoned: the
	// run's final samples follow, and launch expects the coordinator to exit.
	snapCtx, cancelSnaps := context.WithCancel(ctx)
	defer cancelSnaps()
	snaps, err := startSnapshots(snapCtx, rc, *out, log, reg)
	if err != nil {
		return err
	}
	defer snaps.stop()
	if snaps != nil {
		cc.Snapshots = snaps.s
	}
	c, err := coordinator.New(cc)
	if err != nil {
		return err
	}
	defer c.Close()
	// One line on stdout with the addresses, for launchers and scripts.
	fmt.Fprintf(stdout, "coordinator listening on %s gossip %s\n", c.Addr(), c.GossipAddr())
	if *addrFile != "" {
		if err := coordinator.WriteAddrFile(*addrFile, coordinator.Addrs{GRPC: c.Addr(), Gossip: c.GossipAddr(), PID: os.Getpid()}); err != nil {
			return err
		}
	}
	wait, err := serveMetrics(ctx, *metrics, reg, log)
	if err != nil {
		return err
	}
	defer wait()
	if err := c.Run(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Run has checkpointed the last committed step (else it returns the run's failure).
			return interrupted{c.Step()}
		}
		return err
	}
	cancelSnaps()
	if err := snaps.stop(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	curve, err := run.finish()
	if err != nil {
		return err
	}
	log.Info("loss curve", "path", curve)
	return nil
}
