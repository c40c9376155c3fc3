package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ncsn/ncsn/model/samples"
)

func init() {
	commands["launch"] = command{
		summary: "train on this host with a coordinator and N worker processes, then sample",
		run:     runLaunch,
	}
}

// child is a process started by launch.
type child struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

func startChild(ctx context.Context, exe, name, logPath string, args []string, stdout io.Writer) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = f
	cmd.Stdout = f
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches launch, which forwards it
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("launch: start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

// stop asks the child to exit (SIGINT), then kills it after grace.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

func runLaunch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("launch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workers := fs.Int("workers", 2, "number of worker processes")
	rcf := addRunConfigFlags(fs)
	out := fs.String("out", "ncsn-out", "output folder: checkpoints/, logs/, samples")
	lf := addLogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn launch --workers N [--config FILE] [--set key=value]... [--out DIR]\n\nStarts a coordinator and N workers on localhost (free ports), trains run.steps steps,\nwrites DIR/checkpoints/*.safetensors, then samples. Each process logs to DIR/logs/.\nThe coordinator process draws the run.sample_every snapshots into DIR/snapshots.")
		fs.PrintDefaults()
		fmt.Fprint(stderr, configDefaultsHelp)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if *workers < 1 {
		return usageError{fmt.Errorf("--workers %d: want >= 1", *workers)}
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	rc, done, err := rcf.loadRun(stdout, log)
	if err != nil || done {
		return err
	}
	if err := rc.WorkersFit(*workers); err != nil {
		return usageError{err}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logs := filepath.Join(*out, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	cfgFile := filepath.Join(*out, "config.yaml")
	if err := os.WriteFile(cfgFile, rc.YAML(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "output: %s (logs in %s)\n", *out, logs)

	// The coordinator prints its addresses on stdout; launch reads them there.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	coordLog := filepath.Join(logs, "coordinator.log")
	cargs := append([]string{"coordinator", "--config", cfgFile, "--listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--out", *out}, lf.args()...)
	coord, err := startChild(ctx, exe, "coordinator", coordLog, cargs, pw)
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	addrc := make(chan string, 1)
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 4 && f[0] == "coordinator" && f[2] == "on" {
				addrc <- f[3]
			}
		}
		close(addrc)
	}()
	var children []*child
	stopAll := func() {
		for _, c := range children {
			c.stop(10 * time.Second)
		}
		coord.stop(15 * time.Second)
	}
	var addr string
	select {
	case a, ok := <-addrc:
		if !ok {
			<-coord.done
			return fmt.Errorf("launch: the coordinator did not start (%v); see %s", coord.err, coordLog)
		}
		addr = a
	case <-ctx.Done():
		coord.stop(5 * time.Second)
		return ctx.Err()
	}
	log.Info("coordinator started", "addr", addr, "log", coordLog)
	for i := 0; i < *workers; i++ {
		name := fmt.Sprintf("worker-%d", i)
		wargs := append([]string{"worker", "--join", addr, "--listen", "127.0.0.1:0"}, lf.args()...)
		c, err := startChild(ctx, exe, name, filepath.Join(logs, name+".log"), wargs, nil)
		if err != nil {
			stopAll()
			return err
		}
		children = append(children, c)
	}
	log.Info("workers started", "n", *workers, "steps", rc.Run.Steps, "global_batch", rc.Train.GlobalBatch)
	pctx, stopProgress := context.WithCancel(ctx)
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		followProgress(pctx, addr, "", rc.Train.GlobalBatch, stdout, 10*time.Second)
	}()
	// A run whose workers have all died cannot finish: say so rather than wait.
	workersGone := make(chan struct{})
	go func() {
		for _, c := range children {
			<-c.done
		}
		close(workersGone)
	}()
	select {
	case <-coord.done:
		stopProgress()
		<-progressDone
	case <-workersGone:
		stopProgress()
		<-progressDone
		select {
		case <-coord.done: // the run completed as the workers left
		case <-time.After(5 * time.Second):
			coord.stop(5 * time.Second)
			var errs []error
			for _, c := range children {
				errs = append(errs, fmt.Errorf("%s: %v: %s (log: %s)", c.name, c.err, lastLine(c.log.Name()), c.log.Name()))
			}
			return fmt.Errorf("launch: every worker exited before the run completed:\n%w", errors.Join(errs...))
		}
	case <-ctx.Done():
		stopProgress()
		<-progressDone
		log.Warn("interrupted; stopping the cluster")
		stopAll()
		return ctx.Err()
	}
	// Workers exit once told the run is complete.
	for _, c := range children {
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			log.Warn("worker did not exit after the run; stopping it", "worker", c.name)
			c.stop(5 * time.Second)
		}
		if c.err != nil {
			log.Warn("worker exited with an error", "worker", c.name, "err", c.err, "log", c.log.Name())
		}
	}
	if coord.err != nil {
		return fmt.Errorf("launch: the run failed: coordinator %v; see %s", coord.err, coordLog)
	}
	ckpts := filepath.Join(*out, "checkpoints")
	fmt.Fprintf(stdout, "checkpoints: %s\nloss curve: %s\n", ckpts, filepath.Join(*out, "loss.png"))
	if rc.Run.Samples == 0 {
		return nil
	}
	path := filepath.Join(*out, samples.DefaultName(rc))
	sargs := []string{"sample", "--checkpoint", ckpts, "--n", fmt.Sprint(rc.Run.Samples), "--seed", fmt.Sprint(rc.Run.Seed), "--out", path}
	s, err := startChild(ctx, exe, "sample", filepath.Join(logs, "sample.log"), sargs, nil)
	if err != nil {
		return err
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		s.stop(5 * time.Second)
		return ctx.Err()
	}
	if s.err != nil {
		return errors.Join(fmt.Errorf("launch: sampling failed; see %s", filepath.Join(logs, "sample.log")), s.err)
	}
	fmt.Fprintf(stdout, "samples: %s\n", path)
	return nil
}

// lastLine is the last non-empty line of a log file: where a process that
// failed says why.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
