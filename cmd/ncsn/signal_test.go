package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ncsn/ncsn/coordinator"
	"github.com/ncsn/ncsn/internal/plot"
)

// startMain runs this test binary as ncsn (see TestMain) in a process of its own.
func startMain(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "NCSN_TEST_AS_MAIN=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, &out
}

// waitLoss waits until the run in dir has logged its loss past step 100. There is no
// event to wait on in another process: the loss log is read every 50 ms.
func waitLoss(t *testing.T, dir string, exited func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if loss, err := plot.ReadLossLog(filepath.Join(dir, "loss.csv")); err == nil && len(loss) > 100 {
			return
		}
		if exited() {
			t.Fatal("the run exited before it was interrupted")
		}
	}
	t.Fatal("no loss logged within 2 minutes")
}

var interruptedRE = regexp.MustCompile(`interrupted at step (\d+); run the same command to resume`)

// A signal stops a run after checkpointing its last committed step: exit 128+signal,
// the step named, the run resumable by the same command.
func TestInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ncsn processes")
	}
	for _, tc := range []struct {
		cmd  string
		sig  syscall.Signal
		code int
	}{
		{"train", syscall.SIGINT, 130},
		{"launch", syscall.SIGTERM, 143},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{tc.cmd, "--out", dir, "--set", "data.name=gmm", "--set", "run.steps=1000000",
				"--set", "run.checkpoint_every=1000000", "--set", "run.log_every=20", "--set", "run.samples=0"}
			cmd, out := startMain(t, args...)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var exitErr error
			exited := func() bool {
				select {
				case exitErr = <-done:
					return true
				default:
					return false
				}
			}
			waitLoss(t, dir, exited)
			if tc.cmd == "launch" {
				// The coordinator wrote its pid: it must be gone too once launch exits.
				defer func() {
					a, err := coordinator.ReadAddrFile(filepath.Join(dir, "coordinator.addr"))
					if err != nil {
						t.Fatal(err)
					}
					if err := syscall.Kill(a.PID, 0); !errors.Is(err, syscall.ESRCH) {
						t.Errorf("the coordinator (pid %d) outlived launch", a.PID)
					}
				}()
			}
			cmd.Process.Signal(tc.sig)
			select {
			case exitErr = <-done:
			case <-time.After(time.Minute):
				t.Fatal("no exit within a minute of the signal")
			}
			var ee *exec.ExitError
			if !errors.As(exitErr, &ee) || ee.ExitCode() != tc.code {
				t.Fatalf("exit %v, want %d\n%s", exitErr, tc.code, out)
			}
			m := interruptedRE.FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("no 'interrupted at step N' message:\n%s", out)
			}
			step, _ := strconv.ParseInt(m[1], 10, 64)
			ckpt := filepath.Join(dir, "checkpoints", fmt.Sprintf("ckpt-%d.safetensors", step))
			if _, err := os.Stat(ckpt); err != nil || step < 100 {
				t.Fatalf("interrupted at step %d, checkpoint: %v", step, err)
			}
			// The same command resumes (training longer is a free change).
			args = append(args, "--set", fmt.Sprintf("run.steps=%d", step+40))
			if _, errs, code := runMain(t, args...); code != 0 {
				t.Fatalf("resume exited %d: %s", code, errs)
			}
			loss, err := plot.ReadLossLog(filepath.Join(dir, "loss.csv"))
			if err != nil || int64(len(loss)) != step+40 {
				t.Errorf("loss log after the resume: %d steps, %v; want %d", len(loss), err, step+40)
			}
			b, _ := os.ReadFile(filepath.Join(dir, "loss.csv"))
			if n := strings.Count(string(b), fmt.Sprintf("\n%d,", step+1)); n != 1 {
				t.Errorf("step %d logged %d times", step+1, n)
			}
		})
	}
}

// runMain runs the command in a process of its own and waits for it.
func runMain(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "NCSN_TEST_AS_MAIN=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}
