package allreduce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ncsn/ncsn/allreduce/memnet"
	"github.com/ncsn/ncsn/proto/ringpb"
	"google.golang.org/grpc/mem"
)

// Tests of the ring on the simulated network. They run in synctest bubbles: the network's
// delays and the operations' deadlines are virtual time, and a bubble ends only once every
// goroutine it started has exited.

// lan is the network of issue 11's simulations: 10 Gbit/s links with 50 µs latency.
var lan = memnet.Link{Latency: 50 * time.Microsecond, Bandwidth: 10e9 / 8}

// sim is a ring of members on one simulated network.
type sim struct {
	net     *memnet.Net
	rings   []*Ring
	addrs   []string
	crashed sync.Map // addresses crash killed
}

// startSim starts n members on a new network; call it inside a bubble. edit adjusts each
// member's config.
func startSim(t *testing.T, n int, ncfg memnet.Config, edit func(*Config)) *sim {
	t.Helper()
	net, err := memnet.New(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{net: net}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		addr := fmt.Sprintf("m%03d", i)
		cfg := Config{
			Self: addr, Transport: MemnetTransport(net, addr), ChunkBytes: 1024,
			Timeout: 20 * time.Second, Logger: slog.New(slog.DiscardHandler),
		}
		if edit != nil {
			edit(&cfg)
		}
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if r.inPlace {
			t.Fatal("memnet holds payloads after Send: pieces must not be sent in place")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A crashed member's server may see its listener go before its Ring closes.
			if err := r.ServeMemnet(ctx, net); err != nil && !s.isCrashed(addr) {
				t.Errorf("%s: %v", addr, err)
			}
		}()
		s.rings, s.addrs = append(s.rings, r), append(s.addrs, addr)
	}
	synctest.Wait() // every member listens
	t.Cleanup(func() {
		for _, r := range s.rings {
			r.Close()
		}
		cancel()
		wg.Wait()
	})
	return s
}

// crash kills member i as kill -9 would: the network resets its streams, then its process
// state goes.
func (s *sim) crash(i int) {
	s.crashed.Store(s.addrs[i], true)
	s.net.Crash(s.addrs[i])
	s.rings[i].Close()
}

func (s *sim) isCrashed(addr string) bool {
	_, ok := s.crashed.Load(addr)
	return ok
}

// TestMemnetAllReduce: 2 to 16 members, every codec, on a LAN with jitter.
func TestMemnetAllReduce(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for n := 2; n <= 16; n++ {
		for _, codec := range allCodecs() {
			l := 100*n + rng.IntN(3000)
			ok := t.Run(fmt.Sprintf("n=%d/%v/len=%d", n, codec, l), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					link := lan
					link.Jitter = 20 * time.Microsecond
					s := startSim(t, n, memnet.Config{Seed: uint64(n), Link: link}, nil)
					checkReduce(t, rng, s.rings, s.addrs, codec, l, 0)
				})
			})
			if !ok {
				return
			}
		}
	}
}

// TestMemnetPartition cuts the link between two members once the operation is under way:
// everyone fails by the deadline, and the two ends of the cut link blame each other.
func TestMemnetPartition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, timeout = 5, 2 * time.Second
		// A window small next to what a member sends, so that the sender across the cut
		// finds itself blocked, as it would be on a real network with a larger buffer.
		s := startSim(t, n, memnet.Config{Link: lan, Window: 16 << 10}, func(c *Config) { c.Timeout = timeout })
		var once sync.Once
		s.rings[2].testHookPiece = func(*Piece) { once.Do(func() { s.net.Cut(s.addrs[1], s.addrs[2]) }) }
		out := reduceAll(context.Background(), s.rings, Op{Run: "p", Epoch: 1, Members: s.addrs}, zeros(n, 100_000), nil)
		for i, o := range out {
			if o.err == nil {
				t.Fatalf("member %d: no error", i)
			}
			if o.dur > timeout+time.Millisecond {
				t.Errorf("member %d returned after %v, deadline %v", i, o.dur, timeout)
			}
			t.Logf("member %d after %v: %v", i, o.dur, o.err)
		}
		// At the deadline an end of the cut link finds its op timed out, or, when its
		// neighbour's own deadline closed their stream first, the stream ended: either way
		// it blames the other end.
		for _, c := range []struct{ member, blamed int }{{1, 2}, {2, 1}} {
			var pe *PeerError
			if err := out[c.member].err; !errors.As(err, &pe) || pe.Peer != s.addrs[c.blamed] {
				t.Errorf("member %d: %v, want a PeerError naming %s", c.member, err, s.addrs[c.blamed])
			}
		}
	})
}

func zeros(n, l int) [][]float32 {
	bufs := make([][]float32, n)
	for i := range bufs {
		bufs[i] = make([]float32, l)
	}
	return bufs
}

// TestMemnetCrash crashes a member once it has received a piece: the others fail well
// before the deadline, its neighbours naming it. The next view's ring, without it, works.
func TestMemnetCrash(t *testing.T) {
	for _, victim := range []int{0, 2} {
		t.Run(fmt.Sprint("victim=", victim), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n, timeout = 4, 10 * time.Second
				s := startSim(t, n, memnet.Config{Link: lan}, func(c *Config) { c.Timeout = timeout })
				var once sync.Once
				s.rings[victim].testHookPiece = func(*Piece) { once.Do(func() { s.crash(victim) }) }
				out := reduceAll(context.Background(), s.rings, Op{Run: "c", Epoch: 1, Members: s.addrs}, zeros(n, 50_000), nil)
				for i, o := range out {
					if i == victim {
						// A killed process has no outcome; the victim's op only must not
						// succeed. It sees ErrClosed, or its streams reset first.
						var pe *PeerError
						if !errors.Is(o.err, ErrClosed) && !errors.As(o.err, &pe) {
							t.Errorf("victim: %v, want ErrClosed or a PeerError", o.err)
						}
						continue
					}
					if o.err == nil || o.dur >= timeout {
						t.Errorf("member %d after %v: %v, want an error before the deadline", i, o.dur, o.err)
					}
					var pe *PeerError
					if neighbour := i == (victim+1)%n || i == (victim+n-1)%n; neighbour && (!errors.As(o.err, &pe) || pe.Peer != s.addrs[victim]) {
						t.Errorf("neighbour %d: %v, want a PeerError naming %s", i, o.err, s.addrs[victim])
					}
				}
				var rest []*Ring
				var members []string
				for i := range n {
					if i != victim {
						rest, members = append(rest, s.rings[i]), append(members, s.addrs[i])
					}
				}
				checkReduce(t, rand.New(rand.NewPCG(1, 1)), rest, members, Codec{QuantInt8, CompressZstd}, 5000, 0)
			})
		})
	}
}

// TestMemnetLoss: a message lost between two members breaks their stream; both ends name
// each other, and once the link is sound again the next operation reopens the stream.
func TestMemnetLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 4
		s := startSim(t, n, memnet.Config{Link: lan}, nil)
		var once sync.Once
		s.rings[3].testHookPiece = func(*Piece) {
			once.Do(func() { s.net.SetLink(s.addrs[2], s.addrs[3], memnet.Link{Latency: lan.Latency, Loss: 1}) })
		}
		out := reduceAll(context.Background(), s.rings, Op{Run: "l", Epoch: 1, Members: s.addrs}, zeros(n, 50_000), nil)
		for _, c := range []struct{ member, blamed int }{{2, 3}, {3, 2}} {
			var pe *PeerError
			if err := out[c.member].err; !errors.As(err, &pe) || pe.Peer != s.addrs[c.blamed] {
				t.Errorf("member %d: %v, want a PeerError naming %s", c.member, err, s.addrs[c.blamed])
			}
		}
		for i, o := range out {
			if o.err == nil {
				t.Errorf("member %d: no error", i)
			}
		}
		s.rings[3].testHookPiece = nil
		s.net.SetLink(s.addrs[2], s.addrs[3], lan)
		checkReduce(t, rand.New(rand.NewPCG(2, 2)), s.rings, s.addrs, Codec{}, 5000, 1)
	})
}

// TestMemnetDeadline: a member that never joins makes every other fail at the deadline.
func TestMemnetDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 3 * time.Second
		s := startSim(t, 4, memnet.Config{Link: lan}, nil)
		op := Op{Run: "d", Epoch: 1, Members: s.addrs, Timeout: timeout}
		for i, o := range reduceAll(context.Background(), s.rings[:3], op, zeros(3, 10_000), nil) {
			var pe *PeerError
			if !errors.As(o.err, &pe) || !errors.Is(o.err, context.DeadlineExceeded) {
				t.Errorf("member %d: %v, want a PeerError past the deadline", i, o.err)
			}
			if o.dur < timeout || o.dur > timeout+time.Millisecond {
				t.Errorf("member %d returned after %v, deadline %v", i, o.dur, timeout)
			}
		}
	})
}

// TestMemnetStaleEpoch: a member that has moved on to a newer epoch refuses the older
// operation's pieces: its left neighbour fails with ErrAborted at once.
func TestMemnetStaleEpoch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 10 * time.Second
		s := startSim(t, 3, memnet.Config{Link: lan}, func(c *Config) { c.Timeout = timeout })
		s.rings[2].Abort(6)
		op := Op{Run: "s", Epoch: 5, Members: s.addrs}
		out := reduceAll(context.Background(), s.rings[:2], op, zeros(2, 10_000), nil)
		if o := out[1]; !errors.Is(o.err, ErrAborted) || o.dur > time.Millisecond {
			t.Errorf("left neighbour of the newer epoch after %v: %v, want ErrAborted at once", o.dur, o.err)
		}
		// Member 0 sent its pieces before member 1 failed, so no refusal reaches it; the
		// coordinator's new view would abort it, here its deadline does.
		if out[0].err == nil {
			t.Error("member 0: no error")
		}

		// A piece of a stale epoch sent straight to a member is refused with its epoch.
		c, err := s.net.Dial(t.Context(), "outsider", s.addrs[2])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Send(&Piece{Run: "s", Epoch: 5, Step: 3, Phase: ringpb.Phase_PHASE_REDUCE_SCATTER}); err != nil {
			t.Fatal(err)
		}
		m, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		ref := m.(refusalMessage).Refusal
		if ref.Code != ringpb.RefusalCode_REFUSAL_STALE_EPOCH || ref.CurrentEpoch != 6 || ref.Epoch != 5 || ref.Step != 3 {
			t.Errorf("refusal %v, want stale epoch 5 at 6", ref)
		}
	})
}

// TestMemnetLargeRings runs rings of 64 and 256 members on the 10 Gbit/s, 50 µs network: the
// sums are right, each member costs a few goroutines, and with one piece per chunk the
// simulated time is what the ring's 2(N-1) steps of a latency plus a piece's serialisation
// predict, so the network model and the ring's schedule agree.
func TestMemnetLargeRings(t *testing.T) {
	if testing.Short() {
		t.Skip("large rings")
	}
	for _, tc := range []struct{ n, bytes, chunkBytes int }{
		{64, 4 << 20, DefaultChunkBytes},
		{256, 256 << 10, 1024},
	} {
		t.Run(fmt.Sprintf("n=%d/%dKiB", tc.n, tc.bytes>>10), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n, l := tc.n, tc.bytes/4
				s := startSim(t, n, memnet.Config{Link: lan}, func(c *Config) { c.ChunkBytes = tc.chunkBytes })
				bufs := make([][]float32, n)
				for r := range bufs {
					bufs[r] = make([]float32, l)
					for i := range bufs[r] {
						bufs[r][i] = float32((r + i) % 5) // sums are exact in float32
					}
				}
				peak := 0
				done := make(chan struct{})
				go func() {
					for {
						select {
						case <-done:
							return
						case <-time.After(100 * time.Microsecond):
							peak = max(peak, runtime.NumGoroutine())
						}
					}
				}()
				start, cpu := time.Now(), cpuTime()
				out := reduceAll(context.Background(), s.rings, Op{Run: "big", Epoch: 1, Members: s.addrs}, bufs, nil)
				simulated, cpu := time.Since(start), cpuTime()-cpu
				close(done)
				for i, o := range out {
					if o.err != nil {
						t.Fatalf("member %d: %v", i, o.err)
					}
				}
				var want [5]float32
				for i := range want {
					for k := range n {
						want[i] += float32((k + i) % 5)
					}
				}
				for r := range bufs {
					for i, v := range bufs[r] {
						if v != want[i%5] {
							t.Fatalf("member %d [%d] = %g, want %g", r, i, v, want[i%5])
						}
					}
				}
				if pe := tc.chunkBytes / 4 / Int8Block * Int8Block; l/n > pe {
					t.Fatalf("chunks of %d values need more than one piece of %d", l/n, pe)
				}
				piece := (&Piece{Run: "big", Epoch: 1, Phase: 2, Chunk: uint32(n - 1), Codec: 1, Length: uint64(l),
					Payload: mem.BufferSlice{mem.SliceBuffer(make([]byte, 4*(l/n)))}}).WireSize()
				model := time.Duration(2*(n-1)) * (lan.Latency + time.Duration(float64(piece)/lan.Bandwidth*1e9))
				t.Logf("%d members, %d KiB: %v simulated (model %v), %v of CPU, at most %d goroutines",
					n, tc.bytes>>10, simulated, model, cpu.Round(time.Millisecond), peak)
				if d := simulated - model; d < -model/100 || d > model/100 {
					t.Errorf("simulated %v, the model says %v", simulated, model)
				}
				if peak > 8*n {
					t.Errorf("%d goroutines for %d members", peak, n)
				}
			})
		})
	}
}

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
