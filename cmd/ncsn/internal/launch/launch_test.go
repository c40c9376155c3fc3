package launch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ncsn/ncsn/coordinator"
)

// The test binary stands in for ncsn: with LAUNCH_FAKE set it plays the role its first
// argument names, as LAUNCH_FAKE says: ok, coord-fails, workers-die or hang.
func TestMain(m *testing.M) {
	if mode := os.Getenv("LAUNCH_FAKE"); mode != "" {
		os.Exit(fake(mode, os.Args[1], os.Args[2:]))
	}
	goleak.VerifyTestMain(m)
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func fake(mode, role string, args []string) int {
	switch role {
	case "coordinator", "worker":
		if f := flagValue(args, "--secret-file"); f == "" {
			fmt.Fprintln(os.Stderr, "no --secret-file")
			return 1
		}
	}
	switch role {
	case "coordinator":
		if mode == "coord-fails" {
			fmt.Fprintln(os.Stderr, "level=ERROR msg=\"data: open /no/such/file: no such file\"")
			return 1
		}
		out := flagValue(args, "--out")
		if err := coordinator.WriteAddrFile(flagValue(args, "--addr-file"), coordinator.Addrs{GRPC: "127.0.0.1:7", PID: os.Getpid()}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// Done once every worker has checked in; "hang" and "workers-die" never are.
		for mode == "ok" {
			if m, _ := filepath.Glob(filepath.Join(out, "joined-*")); len(m) == 2 {
				return 0
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Hour) // until the launcher stops it
	case "worker":
		if mode == "workers-die" {
			fmt.Fprintln(os.Stderr, "worker: the ring broke")
			return 1
		}
		if flagValue(args, "--join") != "127.0.0.1:7" {
			fmt.Fprintln(os.Stderr, "joined the wrong address")
			return 1
		}
		// The worker learns the run folder from the test's environment.
		os.WriteFile(filepath.Join(os.Getenv("LAUNCH_OUT"), fmt.Sprintf("joined-%d", os.Getpid())), nil, 0o644)
		if mode == "hang" {
			time.Sleep(time.Hour) // until the launcher stops it
		}
		return 0
	case "sample":
		fmt.Fprintln(os.Stderr, "sampling: 100%")
		return map[bool]int{true: 0, false: 1}[os.WriteFile(flagValue(args, "--out"), []byte("samples"), 0o644) == nil]
	}
	return 2
}

func newLauncher(t *testing.T, mode string) (*Launcher, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	l, err := New(Config{
		Exe: exe, Env: append(os.Environ(), "LAUNCH_FAKE="+mode, "LAUNCH_OUT="+out), Workers: 2, Out: out,
		RunConfig: []byte("run: {seed: 1}\n"), SampleArgs: []string{"--out", filepath.Join(out, "samples.png")},
		Grace: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l, out
}

func TestLaunchRuns(t *testing.T) {
	l, out := newLauncher(t, "ok")
	var sampleOut strings.Builder
	l.cfg.SampleOutput = &sampleOut
	followed := make(chan string, 1)
	l.cfg.Follow = func(ctx context.Context, addr, secretFile string) { followed <- addr; <-ctx.Done() }
	if err := l.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := <-followed; a != "127.0.0.1:7" {
		t.Errorf("progress followed %q, want the address the coordinator wrote", a)
	}
	if b, err := os.ReadFile(filepath.Join(out, "samples.png")); err != nil || string(b) != "samples" {
		t.Errorf("sampling did not run: %q, %v", b, err)
	}
	if !strings.Contains(sampleOut.String(), "sampling: 100%") {
		t.Errorf("the sampling progress did not reach the launcher's output: %q", sampleOut.String())
	}
	if b, err := os.ReadFile(l.ConfigFile()); err != nil || string(b) != "run: {seed: 1}\n" {
		t.Errorf("config.yaml: %q, %v", b, err)
	}
	// A secret of its own, readable by this user alone, given to the coordinator and workers.
	st, err := os.Stat(l.SecretFile())
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() < 40 {
		t.Errorf("secret file: %v, %v", st, err)
	}
	for _, name := range []string{"coordinator", "worker-0", "worker-1", "sample"} {
		if _, err := os.Stat(filepath.Join(l.Logs(), name+".log")); err != nil {
			t.Errorf("no log of %s: %v", name, err)
		}
	}
	// A second run in the folder appends to the logs under a header of its own.
	for _, j := range must(filepath.Glob(filepath.Join(out, "joined-*"))) {
		os.Remove(j)
	}
	if err := l.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(l.Logs(), "coordinator.log"))
	if n := strings.Count(string(b), "==== "); n != 2 || !strings.Contains(string(b), "ncsn coordinator --config") {
		t.Errorf("after two runs the coordinator's log has %d headers:\n%s", n, b)
	}
}

func TestLaunchFailures(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{"coord-fails", "coordinator did not start"},
		{"workers-die", "every worker exited"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			l, _ := newLauncher(t, tc.mode)
			err := l.Run(context.Background())
			if err == nil {
				t.Fatal("Run succeeded")
			}
			// The message says what failed and why, in the child's own words, and where its log is.
			msg := err.Error()
			for _, want := range []string{tc.want, l.Logs()} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if tc.mode == "coord-fails" && !strings.Contains(msg, "/no/such/file") {
				t.Errorf("error %q does not quote the coordinator's last log line", msg)
			}
			if _, err := os.Stat(l.ConfigFile()); tc.mode == "coord-fails" && err == nil {
				t.Error("a run whose coordinator did not start wrote config.yaml")
			}
			if tc.mode == "workers-die" && !strings.Contains(msg, "the ring broke") {
				t.Errorf("error %q does not quote the workers' last log line", msg)
			}
		})
	}
}

// Close stops a run in progress: Run returns only once every child has exited.
func TestLaunchClose(t *testing.T) {
	l, out := newLauncher(t, "hang")
	errc := make(chan error, 1)
	go func() { errc <- l.Run(context.Background()) }()
	var pids []int
	for len(pids) < 3 {
		select {
		case err := <-errc:
			t.Fatalf("Run returned before Close: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		pids = pids[:0]
		if a, err := coordinator.ReadAddrFile(l.AddrFile()); err == nil {
			pids = append(pids, a.PID)
		}
		joined, _ := filepath.Glob(filepath.Join(out, "joined-*"))
		for _, j := range joined {
			var pid int
			fmt.Sscanf(filepath.Base(j), "joined-%d", &pid)
			pids = append(pids, pid)
		}
	}
	l.Close()
	l.Close()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after Close: %v, want context.Canceled", err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after Run returned (%v)", pid, err)
		}
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []Config{
		{Workers: 1, Out: "o", RunConfig: []byte("c")},
		{Exe: "x", Workers: 0, Out: "o", RunConfig: []byte("c")},
		{Exe: "x", Workers: 1, RunConfig: []byte("c")},
		{Exe: "x", Workers: 1, Out: "o"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
