package clustersim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ncsn/ncsn/allreduce/memnet"
)

// lan is issue 11's network: 10 Gbit/s links with 50 µs latency.
var lan = memnet.Link{Latency: 50 * time.Microsecond, Bandwidth: 10e9 / 8}

// The reference workload: the reference U-Net's gradient (1,041,601 parameters) and a
// step of 64 samples per member, about 1 s of compute on a 2-core machine.
const (
	refParams  = 1041601
	refCompute = time.Second
)

type row struct {
	n                 int
	step, ring        time.Duration // fault-free step, and its part beyond compute
	recover           time.Duration // a death to the next committed step
	detect            time.Duration // gossip's time to declare a silent node dead
	silentRecover     time.Duration // a silent death (power loss) to the next commit
	churnRate         float64       // committed steps per second under churn, over fault-free
	churnEvents       int
	churnDeathRecover time.Duration // mean death → next commit under churn
}

// waitCommits waits (in simulated time) until the run has committed k steps after from.
func waitCommits(t *testing.T, s *Sim, from, k int) []Commit {
	t.Helper()
	for deadline := s.Since() + time.Hour; s.Since() < deadline; {
		if c := s.Commits(); len(c) >= from+k {
			return c[from : from+k]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %d commits within an hour of simulated time", k)
	return nil
}

// nextCommitAfter waits for the first commit after simulated time at.
func nextCommitAfter(t *testing.T, s *Sim, at time.Duration) time.Duration {
	t.Helper()
	for deadline := at + time.Hour; s.Since() < deadline; {
		c := s.Commits()
		if i := slices.IndexFunc(c, func(c Commit) bool { return c.At > at }); i >= 0 {
			return c[i].At - at
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no commit within an hour of simulated time after a death")
	return 0
}

func median(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

func measure(t *testing.T, n, params int, compute time.Duration) row {
	r := row{n: n}
	synctest.Test(t, func(t *testing.T) {
		s, err := New(Config{Members: n, Params: params, Compute: compute, Link: lan, Steps: 1 << 40, Seed: uint64(n)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// Fault-free: the steps after every member is in the ring.
		for {
			c := s.Commits()
			if len(c) > 0 && c[len(c)-1].Members == n {
				break
			}
			time.Sleep(compute)
		}
		from := len(s.Commits())
		c := waitCommits(t, s, from, 6)
		var steps []time.Duration
		for i := 1; i < len(c); i++ {
			steps = append(steps, c[i].At-c[i-1].At)
		}
		r.step = median(steps)
		r.ring = r.step - compute
		faultFree := float64(len(c)-1) / (c[len(c)-1].At - c[0].At).Seconds()

		// A death mid-step: the time until the ring, one member short, commits again.
		time.Sleep(compute / 2)
		at := s.Since()
		s.Kill()
		r.recover = nextCommitAfter(t, s, at)

		// A silent death: only gossip notices, after memberlist's failure detection with
		// the default cluster settings (a probe interval to miss a probe, then the
		// suspicion timeout, which grows with log10 of the members).
		time.Sleep(compute / 2)
		r.detect = detectTime(n)
		at = s.Since()
		s.KillSilently(r.detect)
		r.silentRecover = nextCommitAfter(t, s, at)

		// Churn: every 5 steps' time, at a random moment of the step, a member dies or a
		// new one joins, for 60 steps' time.
		from = len(s.Commits())
		t0 := s.Since()
		period := 5 * r.step
		jitter := rand.New(rand.NewPCG(uint64(n), 3))
		var deaths []time.Duration
		for i := 0; i < 12; i++ {
			time.Sleep(period/2 + time.Duration(jitter.Int64N(int64(period/2))))
			if i%2 == 0 {
				at := s.Since()
				s.Kill()
				deaths = append(deaths, nextCommitAfter(t, s, at))
			} else if err := s.Join(); err != nil {
				t.Fatal(err)
			}
			r.churnEvents++
		}
		elapsed := s.Since() - t0
		r.churnRate = float64(len(s.Commits())-from) / elapsed.Seconds() / faultFree
		var sum time.Duration
		for _, d := range deaths {
			sum += d
		}
		r.churnDeathRecover = sum / time.Duration(len(deaths))
	})
	return r
}

// detectTime models memberlist's detection of a silent node with the default cluster
// settings (probe_interval 500ms, suspicion_mult 2): up to a probe interval until a
// probe fails, then suspicion_mult·max(1, log10 n)·probe_interval.
func detectTime(n int) time.Duration {
	const interval = 500 * time.Millisecond
	return interval + time.Duration(2*max(1, math.Log10(float64(n)))*float64(interval))
}

func table(rows []row, params int, compute time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gradient %d float32 (%.1f MB), compute %v per step, links 10 Gbit/s, 50 µs\n", params, float64(4*params)/1e6, compute)
	fmt.Fprintln(&b, "| members | step | beyond compute | kill -9 → next commit | power loss → next commit (gossip detection) | steps/s under churn, of fault-free | kill -9 → commit under churn |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %v | %v (%.1f%%) | %v | %v (%v) | %.1f%% | %v |\n", r.n, r.step.Round(10*time.Microsecond), r.ring.Round(10*time.Microsecond),
			100*r.ring.Seconds()/compute.Seconds(), r.recover.Round(100*time.Microsecond), r.silentRecover.Round(time.Millisecond), r.detect.Round(time.Millisecond),
			100*r.churnRate, r.churnDeathRecover.Round(100*time.Microsecond))
	}
	return b.String()
}

// TestScale runs the real core and ring with 16, 64 and 256 members on the simulated
// network and checks the figures against the ring's timing model. NCSN_SIM=full uses the
// reference U-Net's gradient (the README's table); the default a 256 KiB one, for CI.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 16-256 members")
	}
	params, compute := 1<<16, 200*time.Millisecond
	if os.Getenv("NCSN_SIM") == "full" {
		params, compute = refParams, refCompute
	}
	var rows []row
	sizes := []int{16, 64, 256}
	if s := os.Getenv("NCSN_SIM_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			var n int
			fmt.Sscan(f, &n)
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		r := measure(t, n, params, compute)
		rows = append(rows, r)
		// The model: reduce-scatter and all-gather each take n−1 rounds of a latency and a
		// chunk (4·params/n bytes) on the wire. Rank 0's commit (the gradient to the
		// coordinator and the reply) delays its next all-reduce, which the others have
		// begun: it adds at most its round trip.
		chunk := time.Duration(float64(4*params) / float64(n) / lan.Bandwidth * float64(time.Second))
		ring := time.Duration(2*(n-1)) * (lan.Latency + chunk)
		commit := 2*lan.Latency + time.Duration(float64(4*params)/lan.Bandwidth*float64(time.Second))
		t.Logf("%d members: %v beyond compute; model: ring %v, + at most a commit %v", n, r.ring, ring, commit)
		if r.ring < ring*99/100 || r.ring > (ring+commit)*11/10 {
			t.Errorf("%d members: %v beyond compute, the model says %v to %v", n, r.ring, ring, ring+commit)
		}
		// A death costs the step in flight and one more: detection is a reset stream, so
		// within a few latencies.
		if r.recover > 3*r.step {
			t.Errorf("%d members: %v from a death to the next commit, more than 3 steps of %v", n, r.recover, r.step)
		}
		if r.silentRecover < r.detect || r.silentRecover > r.detect+3*r.step {
			t.Errorf("%d members: a silent death cost %v, gossip detects it in %v", n, r.silentRecover, r.detect)
		}
		if r.churnRate < 0.5 || r.churnRate > 0.999 {
			t.Errorf("%d members: churn kept %.0f%% of the fault-free rate", n, 100*r.churnRate)
		}
	}
	t.Logf("\n%s", table(rows, params, compute))
}
