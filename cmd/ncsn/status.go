package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/proto/coordpb"
)

func init() {
	commands["status"] = command{summary: "show a running coordinator's members, epoch, step, loss and samples/s", run: runStatus}
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("coordinator", "", "the coordinator's gRPC address HOST:PORT (required)")
	secretFile := fs.String("secret-file", "", "file holding the cluster secret (default $"+cluster.SecretEnv+", else the built-in one-host secret)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	watch := fs.Duration("watch", 0, "refresh every this long until the run is done (e.g. 2s); 0 prints once")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the coordinator to answer")
	tf := addTLSFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn status --coordinator HOST:PORT [--json] [--watch 2s]")
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *addr == "" {
		return usageError{fmt.Errorf("--coordinator is required")}
	}
	dialOpts, err := tf.dial()
	if err != nil {
		return err
	}
	st, err := dialStatus(*addr, *secretFile, dialOpts...)
	if err != nil {
		return err
	}
	defer st.Close()
	for {
		r, err := st.get(ctx, *timeout)
		if err != nil {
			return err
		}
		if *asJSON {
			if err := json.NewEncoder(stdout).Encode(r); err != nil {
				return err
			}
		} else {
			printStatus(stdout, r)
		}
		if *watch <= 0 || r.Done {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*watch):
		}
	}
}

// statusClient asks a coordinator for its status, authenticated with the cluster secret.
type statusClient struct {
	conn *grpc.ClientConn
	c    coordpb.CoordinatorClient
	addr string
}

func dialStatus(addr, secretFile string, extra ...grpc.DialOption) (*statusClient, error) {
	secret, _, err := cluster.LoadSecret(secretFile)
	if err != nil {
		return nil, err
	}
	auth, err := cluster.NewAuth(secret)
	if err != nil {
		return nil, err
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, auth.DialOptions()...)
	conn, err := grpc.NewClient(addr, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("status: %s: %w", addr, err)
	}
	return &statusClient{conn: conn, c: coordpb.NewCoordinatorClient(conn), addr: addr}, nil
}

func (s *statusClient) get(ctx context.Context, timeout time.Duration) (*coordpb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := s.c.Status(ctx, &coordpb.StatusRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return nil, fmt.Errorf("status: coordinator %s did not answer: %w", s.addr, err)
	}
	return r, nil
}

func (s *statusClient) Close() error { return s.conn.Close() }

func printStatus(w io.Writer, r *coordpb.StatusResponse) {
	state := "training"
	switch {
	case r.Done:
		state = "done"
	case r.Waiting:
		state = fmt.Sprintf("waiting for workers (min %d)", r.MinWorkers)
	}
	fmt.Fprintf(w, "run %s: %s\nstep %d of %d, epoch %d, loss %.5g, %.1f samples/s\n", r.RunId, state, r.Step, r.TotalSteps, r.Epoch, r.Loss, r.SamplesPerSec)
	if r.LastCheckpoint != "" {
		fmt.Fprintf(w, "last checkpoint: %s\n", r.LastCheckpoint)
	}
	fmt.Fprintf(w, "%d workers (ring order):\n", len(r.Members))
	for i, m := range r.Members {
		fmt.Fprintf(w, "  rank %d  %s  %s\n", i, m.RingAddr, m.WorkerId)
	}
}

// progress renders a run's status as one line (step/total, loss, samples/s,
// workers, ETA), the ETA from the pace since the first status it saw.
type progress struct {
	t0    time.Time
	step0 int64
	// batch, when known, gives an ETA from samples/s before any pace is measured.
	batch int
}

func (p *progress) line(r *coordpb.StatusResponse, now time.Time) string {
	if p.t0.IsZero() || r.Step < p.step0 {
		p.t0, p.step0 = now, r.Step
	}
	eta := "?"
	if d := r.Step - p.step0; d > 0 {
		left := time.Duration(float64(now.Sub(p.t0)) / float64(d) * float64(r.TotalSteps-r.Step))
		eta = left.Round(time.Second).String()
	} else if p.batch > 0 && r.SamplesPerSec > 0 {
		left := time.Duration(float64(r.TotalSteps-r.Step) * float64(p.batch) / r.SamplesPerSec * float64(time.Second))
		eta = left.Round(time.Second).String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "step %d/%d  loss %.4g  %.0f samples/s  workers %d  ETA %s", r.Step, r.TotalSteps, r.Loss, r.SamplesPerSec, len(r.Members), eta)
	if r.Waiting {
		fmt.Fprintf(&b, "  (waiting for %d workers)", r.MinWorkers)
	}
	return b.String()
}

// followProgress shows a run's progress until ctx ends: a line redrawn in
// place every second on a terminal, a plain line every `every` elsewhere.
func followProgress(ctx context.Context, addr, secretFile string, batch int, w io.Writer, every time.Duration) {
	st, err := dialStatus(addr, secretFile)
	if err != nil {
		return
	}
	defer st.Close()
	tty := isTerminal(w)
	period := every
	if tty {
		period = time.Second
	}
	p := progress{batch: batch}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(w)
			}
			return
		case <-t.C:
		}
		r, err := st.get(ctx, period)
		if err != nil {
			continue // the coordinator may be restarting; the launcher reports failures
		}
		if tty {
			fmt.Fprintf(w, "\r%s\033[K", p.line(r, time.Now()))
		} else {
			fmt.Fprintln(w, p.line(r, time.Now()))
		}
		if r.Done {
			if tty {
				fmt.Fprintln(w)
			}
			return
		}
	}
}
