// Package launch supervises a run on one host: a coordinator process and N worker
// processes of the ncsn binary on loopback, then the process that draws the samples.
// It learns the coordinator's address from the address file the coordinator writes for
// it, and says which process failed, and where its log is, when the run cannot finish.
package launch

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ncsn/ncsn/coordinator"
	"github.com/ncsn/ncsn/internal/atomicfile"
)

// Config configures a Launcher.
type Config struct {
	// Exe is the ncsn binary every child runs.
	Exe string
	// Env, if set, is every child's environment (default: this process's).
	Env []string
	// Workers is the number of worker processes.
	Workers int
	// Out is the run folder; logs go to Out/logs, the address file to Out/coordinator.addr.
	Out string
	// RunConfig is the run config (YAML) the coordinator loads. It becomes Out/config.yaml
	// once the coordinator has started, so a refused start leaves the folder's config alone.
	RunConfig []byte
	// ChildArgs are added to the coordinator's and workers' flags (logging);
	// CoordinatorArgs to the coordinator's alone (its metrics address).
	ChildArgs       []string
	CoordinatorArgs []string
	// SampleArgs, if set, are the flags of the `sample` process run after training.
	SampleArgs []string
	// SampleOutput, if set, also receives what the sample process writes to stderr (its
	// progress), besides its log.
	SampleOutput io.Writer
	// Follow, if set, runs during training with the coordinator's gRPC address and the
	// run's secret file, and returns when its context ends (the progress line).
	Follow func(ctx context.Context, addr, secretFile string)
	// StartTimeout bounds the wait for the coordinator's address. Default 2 minutes.
	StartTimeout time.Duration
	// Grace is how long a child asked to stop has before it is killed. Default 10 s.
	Grace  time.Duration
	Logger *slog.Logger
}

// Launcher runs one local cluster.
type Launcher struct {
	cfg       Config
	log       *slog.Logger
	logs      string
	closing   chan struct{}
	closeOnce sync.Once
}

// New validates cfg.
func New(cfg Config) (*Launcher, error) {
	switch {
	case cfg.Exe == "":
		return nil, errors.New("launch: no ncsn binary")
	case cfg.Workers < 1:
		return nil, fmt.Errorf("launch: %d workers: want >= 1", cfg.Workers)
	case cfg.Out == "" || len(cfg.RunConfig) == 0:
		return nil, errors.New("launch: a run folder and a run config are needed")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 2 * time.Minute
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	logs := filepath.Join(cfg.Out, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	return &Launcher{cfg: cfg, log: cfg.Logger, logs: logs, closing: make(chan struct{})}, nil
}

// Logs is the folder of the children's logs.
func (l *Launcher) Logs() string { return l.logs }

// SecretFile holds the run's cluster secret, made anew by every Run: the built-in
// secret is public, and another user of this host must not be able to join.
func (l *Launcher) SecretFile() string { return filepath.Join(l.cfg.Out, "secret") }

// ConfigFile is where the run config is kept once the run has started.
func (l *Launcher) ConfigFile() string { return filepath.Join(l.cfg.Out, "config.yaml") }

// AddrFile is where the coordinator reports its addresses.
func (l *Launcher) AddrFile() string { return filepath.Join(l.cfg.Out, "coordinator.addr") }

// Close stops a Run in progress; Run then stops the children and returns. Idempotent.
func (l *Launcher) Close() error {
	l.closeOnce.Do(func() { close(l.closing) })
	return nil
}

// Run trains, then samples. It returns once every child it started has exited.
func (l *Launcher) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-l.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer wg.Wait()
	defer cancel()
	if err := l.train(ctx); err != nil {
		return err
	}
	if l.cfg.SampleArgs == nil {
		return nil
	}
	s, err := l.start("sample", append([]string{"sample"}, l.cfg.SampleArgs...), l.cfg.SampleOutput)
	if err != nil {
		return err
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		s.stop(l.cfg.Grace)
		return ctx.Err()
	}
	if s.err != nil {
		return fmt.Errorf("launch: sampling failed (%v): %s; see %s", s.err, lastLine(s.logPath), s.logPath)
	}
	return nil
}

func (l *Launcher) train(ctx context.Context) error {
	af := l.AddrFile()
	if err := os.Remove(af); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("launch: stale address file: %w", err)
	}
	var key [32]byte
	rand.Read(key[:])
	if err := atomicfile.WriteFile(l.SecretFile(), []byte(base64.StdEncoding.EncodeToString(key[:])+"\n"), 0o600); err != nil {
		return fmt.Errorf("launch: cluster secret: %w", err)
	}
	staged := filepath.Join(l.cfg.Out, ".launch-config.yaml")
	if err := atomicfile.WriteFile(staged, l.cfg.RunConfig, 0o666); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	defer os.Remove(staged)
	cargs := append([]string{"coordinator", "--config", staged, "--listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0",
		"--out", l.cfg.Out, "--addr-file", af, "--secret-file", l.SecretFile()}, l.cfg.ChildArgs...)
	cargs = append(cargs, l.cfg.CoordinatorArgs...)
	coord, err := l.start("coordinator", cargs)
	if err != nil {
		return err
	}
	addrs, err := l.waitAddrs(ctx, coord)
	if err != nil {
		coord.stop(l.cfg.Grace)
		return err
	}
	l.log.Info("coordinator started", "addr", addrs.GRPC, "log", coord.logPath)
	if err := atomicfile.WriteFile(l.ConfigFile(), l.cfg.RunConfig, 0o666); err != nil {
		coord.stop(l.cfg.Grace)
		return fmt.Errorf("launch: %w", err)
	}
	var workers []*child
	// The coordinator stops first: it commits nothing more and checkpoints the last
	// committed step; then the workers, which have nothing to save.
	stopAll := func() {
		coord.stop(l.cfg.Grace + 5*time.Second)
		for _, w := range workers {
			w.stop(l.cfg.Grace)
		}
	}
	for i := range l.cfg.Workers {
		w, err := l.start(fmt.Sprintf("worker-%d", i), append([]string{"worker", "--join", addrs.GRPC, "--listen", "127.0.0.1:0",
			"--secret-file", l.SecretFile()}, l.cfg.ChildArgs...))
		if err != nil {
			stopAll()
			return err
		}
		workers = append(workers, w)
	}
	l.log.Info("workers started", "n", l.cfg.Workers)
	fctx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		if l.cfg.Follow != nil {
			l.cfg.Follow(fctx, addrs.GRPC, l.SecretFile())
		}
	}()
	defer func() { stopFollow(); <-followed }()

	// A run whose workers have all died cannot finish: say so rather than wait.
	workersGone := make(chan struct{})
	go func() {
		for _, w := range workers {
			<-w.done
		}
		close(workersGone)
	}()
	select {
	case <-coord.done:
	case <-workersGone:
		select {
		case <-coord.done: // the run completed as the workers left
		case <-time.After(5 * time.Second):
			coord.stop(5 * time.Second)
			var errs []error
			for _, w := range workers {
				errs = append(errs, fmt.Errorf("%s: %v: %s (log: %s)", w.name, w.err, lastLine(w.logPath), w.logPath))
			}
			return fmt.Errorf("launch: every worker exited before the run completed:\n%w", errors.Join(errs...))
		}
	case <-ctx.Done():
		l.log.Warn("interrupted; stopping the cluster")
		stopAll()
		return ctx.Err()
	}
	// Workers exit once told the run is complete.
	for _, w := range workers {
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			l.log.Warn("worker did not exit after the run; stopping it", "worker", w.name)
			w.stop(5 * time.Second)
		}
		if w.err != nil {
			l.log.Warn("worker exited with an error", "worker", w.name, "err", w.err, "log", w.logPath)
		}
	}
	if coord.err != nil {
		return fmt.Errorf("launch: the run failed: coordinator %v: %s; see %s", coord.err, lastLine(coord.logPath), coord.logPath)
	}
	return nil
}

// waitAddrs waits until the coordinator has written its address file, or has exited.
// The file is written by rename, so a file that exists is whole; the wait polls because
// the coordinator is another process and nothing else tells us when it writes.
func (l *Launcher) waitAddrs(ctx context.Context, coord *child) (coordinator.Addrs, error) {
	deadline := time.NewTimer(l.cfg.StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		a, err := coordinator.ReadAddrFile(l.AddrFile())
		switch {
		case err == nil:
			return a, nil
		case !errors.Is(err, os.ErrNotExist):
			return a, fmt.Errorf("launch: %w", err)
		}
		select {
		case <-coord.done:
			// It may have written the file just before exiting.
			if a, err := coordinator.ReadAddrFile(l.AddrFile()); err == nil {
				return a, nil
			}
			return coordinator.Addrs{}, fmt.Errorf("launch: the coordinator did not start (%v): %s; see %s", coord.err, lastLine(coord.logPath), coord.logPath)
		case <-deadline.C:
			return coordinator.Addrs{}, fmt.Errorf("launch: the coordinator wrote no address within %v; see %s", l.cfg.StartTimeout, coord.logPath)
		case <-ctx.Done():
			return coordinator.Addrs{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// child is a process started by the launcher; done is closed once it has been reaped.
type child struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// start runs the ncsn binary with args, its output going to its log and to also.
func (l *Launcher) start(name string, args []string, also ...io.Writer) (*child, error) {
	logPath := filepath.Join(l.logs, name+".log")
	// Logs are appended to, never truncated: a resumed run keeps the story of the
	// runs before it, each start under a header of its own.
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("launch: %s log: %w", name, err)
	}
	fmt.Fprintf(f, "==== %s: ncsn %s\n", time.Now().Format(time.RFC3339), strings.Join(args, " "))
	cmd := exec.Command(l.cfg.Exe, args...)
	cmd.Env = l.cfg.Env
	cmd.Stdout, cmd.Stderr = f, f
	if len(also) > 0 && also[0] != nil {
		cmd.Stderr = io.MultiWriter(f, also[0])
	}
	// Its own process group: a Ctrl-C reaches the launcher, which stops the children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("launch: start %s: %w", name, err)
	}
	c := &child{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

// stop asks the child to exit (SIGINT), then kills it after grace; it returns once the
// child has been reaped.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(os.Interrupt)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.cmd.Process.Kill()
		<-c.done
	}
}

// lastLine is the last non-empty line of a log: where a process that failed says why.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	return s[strings.LastIndexByte(s, '\n')+1:]
}
