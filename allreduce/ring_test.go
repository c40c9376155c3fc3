package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ncsn/ncsn/proto/ringpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// member is one in-process ring member served over real loopback gRPC.
type member struct {
	ring *Ring
	addr string
	stop context.CancelFunc // ends Serve, dropping every connection
	done chan struct{}
	once sync.Once
}

// kill stops the member abruptly: its server drops every connection, then its ring closes.
func (m *member) kill() {
	m.once.Do(func() {
		m.stop()
		<-m.done
		m.ring.Close()
	})
}

func testConfig(addr string) Config {
	return Config{
		Self:       addr,
		ChunkBytes: 1024, // many pieces even for small buffers
		Timeout:    20 * time.Second,
		Logger:     slog.New(slog.DiscardHandler),
	}
}

func startMembers(t testing.TB, n int, edit func(*Config)) []*member {
	t.Helper()
	return startRings(t, n, edit, nil)
}

// startRings is startMembers with ring, if not nil, called on member i's Ring before it serves.
func startRings(t testing.TB, n int, edit func(*Config), ring func(i int, r *Ring)) []*member {
	t.Helper()
	ms := make([]*member, n)
	for i := range ms {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(lis.Addr().String())
		if edit != nil {
			edit(&cfg)
		}
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r.minLocalBuf = 0 // same-host streams take Unix sockets whatever net.core.wmem_max is
		if ring != nil {
			ring(i, r)
		}
		ctx, stop := context.WithCancel(context.Background())
		m := &member{ring: r, addr: cfg.Self, stop: stop, done: make(chan struct{})}
		go func() {
			defer close(m.done)
			r.Serve(ctx, lis)
		}()
		ms[i] = m
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.ring.Close()
		}
		for _, m := range ms {
			m.kill()
		}
	})
	return ms
}

func addrs(ms []*member) []string {
	a := make([]string, len(ms))
	for i, m := range ms {
		a[i] = m.addr
	}
	return a
}

type outcome struct {
	res Result
	err error
	dur time.Duration
}

func rings(ms []*member) []*Ring {
	rs := make([]*Ring, len(ms))
	for i, m := range ms {
		rs[i] = m.ring
	}
	return rs
}

// reduceAll runs one operation on every ring at once; bufs[i] is ring i's buffer.
func reduceAll(ctx context.Context, rs []*Ring, op Op, bufs [][]float32, resid [][]float32) []outcome {
	out := make([]outcome, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := op
			if resid != nil {
				o.Residual = resid[i]
			}
			start := time.Now()
			res, err := r.AllReduce(ctx, o, bufs[i])
			out[i] = outcome{res, err, time.Since(start)}
		}()
	}
	wg.Wait()
	return out
}

// sockets are the two ways members on one host reach each other: Unix sockets (the
// default where the system has them) and TCP loopback (as members on other hosts do).
var sockets = []struct {
	name string
	edit func(*Config)
}{
	{"unix", nil},
	{"tcp", func(c *Config) { c.TCPOnly = true }},
}

// checkSockets checks that every member opened its streams over socket, and at least one.
func checkSockets(t *testing.T, ms []*member, socket string) {
	t.Helper()
	if len(ms) < 2 || (socket == "unix" && hostIdentity() == "") {
		return
	}
	other := map[string]string{"unix": "tcp", "tcp": "unix"}[socket]
	for i, m := range ms {
		got, wrong := testutil.ToFloat64(m.ring.m.opened.WithLabelValues(socket)), testutil.ToFloat64(m.ring.m.opened.WithLabelValues(other))
		if got < 1 || wrong != 0 {
			t.Errorf("member %d opened %v streams over %s and %v over %s, want them all over %s", i, got, socket, wrong, other, socket)
		}
	}
}

func TestAllReduce(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, sock := range sockets {
		for n := 1; n <= 8; n++ {
			if sock.name == "tcp" && n > 4 {
				break // the socket matters to the streams, not to larger rings
			}
			ms := startMembers(t, n, sock.edit)
			if !ms[0].ring.inPlace {
				t.Fatal("over gRPC, raw pieces are not sent in place") // the path below checks it
			}
			lengths := []int{0, 1, n - 1, n + 1, 1000*n + 7, 2560 + rng.IntN(20000)}
			for _, codec := range allCodecs() {
				for step, l := range lengths {
					name := fmt.Sprintf("%s/n=%d/%v/len=%d", sock.name, n, codec, l)
					if !t.Run(name, func(t *testing.T) { checkReduce(t, rng, rings(ms), addrs(ms), codec, l, uint64(step)) }) {
						return
					}
				}
			}
			checkSockets(t, ms, sock.name)
		}
	}
}

// checkReduce runs one operation of codec on buffers of l random values and checks that
// every member ends with the same sum, within the codec's error bound.
func checkReduce(t *testing.T, rng *rand.Rand, rs []*Ring, members []string, codec Codec, l int, step uint64) {
	t.Helper()
	n := len(rs)
	bufs := make([][]float32, n)
	want := make([]float64, l)
	scale := make([]float64, l) // Σ|x|, for the float32 summation bound
	var sumMax float64          // Σ over members of max |x|, for the quantisation bound
	for i := range bufs {
		bufs[i] = gradient(rng, l)
		var m float64
		for j, v := range bufs[i] {
			want[j] += float64(v)
			scale[j] += math.Abs(float64(v))
			m = math.Max(m, math.Abs(float64(v)))
		}
		sumMax += m
	}
	op := Op{Run: "t", Epoch: 1, Step: step, Members: members, Codec: codec}
	out := reduceAll(context.Background(), rs, op, bufs, nil)
	for i, o := range out {
		if o.err != nil {
			t.Fatalf("member %d: %v", i, o.err)
		}
	}
	var maxErr float64
	for j := range want {
		e := math.Abs(float64(bufs[0][j]) - want[j])
		maxErr = math.Max(maxErr, e)
		var bound float64
		switch codec.Quant {
		case QuantNone:
			bound = float64(n) * 0x1p-24 * scale[j] // one rounding per addition
		case QuantBF16:
			bound = float64(n)*0x1p-8*scale[j] + float64(n)*0x1p-24*scale[j]
		case QuantInt8:
			bound = float64(n)*sumMax/254*1.001 + float64(n)*0x1p-24*scale[j]
		case QuantInt4:
			bound = float64(n)*sumMax/14*1.01 + float64(n)*0x1p-24*scale[j]
		}
		if e > bound {
			t.Fatalf("[%d] = %g, want %g within %g", j, bufs[0][j], want[j], bound)
		}
	}
	for i := 1; i < n; i++ {
		for j := range bufs[i] {
			if math.Float32bits(bufs[i][j]) != math.Float32bits(bufs[0][j]) {
				t.Fatalf("member %d [%d] = %g, member 0 has %g", i, j, bufs[i][j], bufs[0][j])
			}
		}
	}
	if codec.Lossy() && l > 1000 {
		t.Logf("max abs error %.3g (Σ max|x| = %.3g)", maxErr, sumMax)
	}
}

// TestErrorFeedback: with int8 and the residual fed back, what all steps applied stays within
// one step's quantisation error of the sum of the true gradients; without it, values too
// small for their block's scale are lost every step and the error grows with the steps.
func TestErrorFeedback(t *testing.T) {
	const n, l, steps = 4, 3000, 100
	ms := startMembers(t, n, nil)
	rng := rand.New(rand.NewPCG(13, 14))
	run := func(feedback bool) (maxDrift, stepBound float64) {
		applied := make([]float64, l)
		truth := make([]float64, l)
		var resid [][]float32
		if feedback {
			resid = make([][]float32, n)
			for i := range resid {
				resid[i] = make([]float32, l)
			}
		}
		for s := range steps {
			bufs := make([][]float32, n)
			var sumMax float64
			for i := range bufs {
				bufs[i] = make([]float32, l)
				var m float64
				for j := range bufs[i] {
					v := float32(1e-3 * (1 + rng.Float64())) // small, always positive: bias shows
					if j%Int8Block == 0 {
						v = float32(rng.NormFloat64()) // one large value per block sets the scale
					}
					bufs[i][j] = v
					truth[j] += float64(v)
					m = math.Max(m, math.Abs(float64(v)))
				}
				sumMax += m
			}
			stepBound = math.Max(stepBound, 2*float64(n)*sumMax/254)
			op := Op{Run: fmt.Sprint(feedback), Epoch: 1, Step: uint64(s), Members: addrs(ms), Codec: Codec{QuantInt8, CompressZstd}}
			for i, o := range reduceAll(context.Background(), rings(ms), op, bufs, resid) {
				if o.err != nil {
					t.Fatalf("step %d member %d: %v", s, i, o.err)
				}
			}
			for j, v := range bufs[0] {
				applied[j] += float64(v)
			}
		}
		for j := range applied {
			maxDrift = math.Max(maxDrift, math.Abs(applied[j]-truth[j]))
		}
		return maxDrift, stepBound
	}
	withEF, bound := run(true)
	withoutEF, _ := run(false)
	t.Logf("after %d steps: |Σ applied − Σ true| ≤ %.4g with error feedback, %.4g without (one step's bound %.4g)", steps, withEF, withoutEF, bound)
	if withEF > bound {
		t.Errorf("with error feedback the drift %g exceeds one step's error bound %g", withEF, bound)
	}
	if withoutEF < 10*withEF {
		t.Errorf("without error feedback the drift %g is not clearly larger than with it (%g): the test shows nothing", withoutEF, withEF)
	}
}

func TestAllReduceMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	var once bool
	ms := startMembers(t, 3, func(c *Config) {
		if !once {
			c.Registerer, once = reg, true
		}
	})
	bufs := [][]float32{make([]float32, 5000), make([]float32, 5000), make([]float32, 5000)}
	codec := Codec{QuantBF16, CompressS2}
	out := reduceAll(context.Background(), rings(ms), Op{Run: "m", Epoch: 1, Members: addrs(ms), Codec: codec}, bufs, nil)
	for _, o := range out {
		if o.err != nil {
			t.Fatal(o.err)
		}
	}
	sent := testutil.ToFloat64(ms[0].ring.m.sent.WithLabelValues(codec.String()))
	recv := testutil.ToFloat64(ms[0].ring.m.received.WithLabelValues(codec.String()))
	if sent != float64(out[0].res.WireBytesSent) || sent == 0 {
		t.Errorf("sent metric %g, result %d", sent, out[0].res.WireBytesSent)
	}
	if recv != float64(out[0].res.WireBytesReceived) || recv == 0 {
		t.Errorf("received metric %g, result %d", recv, out[0].res.WireBytesReceived)
	}
	if c := testutil.CollectAndCount(reg, "ncsn_allreduce_seconds"); c != 1 {
		t.Errorf("%d seconds series, want 1", c)
	}
}

// TestConcurrentOperations runs two runs at once on the same rings, several steps each.
func TestConcurrentOperations(t *testing.T) {
	ms := startMembers(t, 3, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for _, run := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range 5 {
				bufs := make([][]float32, len(ms))
				for i := range bufs {
					bufs[i] = make([]float32, 3000)
					for j := range bufs[i] {
						bufs[i][j] = float32(i + 1)
					}
				}
				for i, o := range reduceAll(context.Background(), rings(ms), Op{Run: run, Epoch: 1, Step: uint64(s), Members: addrs(ms)}, bufs, nil) {
					if o.err != nil {
						errs <- fmt.Errorf("run %s step %d member %d: %w", run, s, i, o.err)
						return
					}
					for _, v := range bufs[i] {
						if v != 6 {
							errs <- fmt.Errorf("run %s step %d member %d: got %g, want 6", run, s, i, v)
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestMemberKilledMidOperation kills one member once it has received its first piece (so no
// member can finish without it): every other member returns an error within the deadline,
// and the killed member's neighbours name it.
func TestMemberKilledMidOperation(t *testing.T) {
	const timeout = 3 * time.Second
	for _, tc := range []struct {
		socket string
		victim int
	}{{"unix", 0}, {"unix", 1}, {"unix", 2}, {"unix", 3}, {"tcp", 0}, {"tcp", 2}} {
		t.Run(fmt.Sprintf("%s/victim=%d", tc.socket, tc.victim), func(t *testing.T) {
			victim := tc.victim
			ms := startMembers(t, 4, func(c *Config) { c.Timeout, c.TCPOnly = timeout, tc.socket == "tcp" })
			started := make(chan struct{})
			killed := make(chan struct{})
			var once sync.Once
			ms[victim].ring.testHookPiece = func(*Piece) {
				once.Do(func() { close(started) })
				<-killed
			}
			go func() {
				<-started
				ms[victim].kill()
				close(killed)
			}()
			bufs := make([][]float32, 4)
			for i := range bufs {
				bufs[i] = make([]float32, 200_000)
			}
			out := reduceAll(context.Background(), rings(ms), Op{Run: "k", Epoch: 1, Members: addrs(ms)}, bufs, nil)
			for i, o := range out {
				if i == victim {
					if !errors.Is(o.err, ErrClosed) {
						t.Errorf("victim: err = %v, want ErrClosed", o.err)
					}
					continue
				}
				if o.err == nil {
					t.Errorf("member %d: no error", i)
					continue
				}
				if o.dur > timeout+time.Second {
					t.Errorf("member %d returned after %v, deadline %v", i, o.dur, timeout)
				}
				var pe *PeerError
				neighbour := i == (victim+1)%4 || i == (victim+3)%4
				if neighbour && (!errors.As(o.err, &pe) || pe.Peer != ms[victim].addr) {
					t.Errorf("neighbour %d: err = %v, want a PeerError naming %s", i, o.err, ms[victim].addr)
				}
				t.Logf("member %d after %v: %v", i, o.dur.Round(time.Millisecond), o.err)
			}
		})
	}
}

// TestSilentMember: a member that never joins the operation makes every other member fail
// by the deadline, naming a neighbour.
func TestSilentMember(t *testing.T) {
	const timeout = time.Second
	ms := startMembers(t, 3, nil)
	bufs := [][]float32{make([]float32, 50_000), make([]float32, 50_000)}
	op := Op{Run: "s", Epoch: 1, Members: addrs(ms), Timeout: timeout}
	for i, o := range reduceAll(context.Background(), rings(ms[:2]), op, bufs, nil) {
		var pe *PeerError
		if !errors.As(o.err, &pe) || !errors.Is(o.err, context.DeadlineExceeded) {
			t.Errorf("member %d: err = %v, want a PeerError wrapping DeadlineExceeded", i, o.err)
		}
		if o.dur > timeout+time.Second {
			t.Errorf("member %d returned after %v", i, o.dur)
		}
	}
}

func TestCallerCancel(t *testing.T) {
	ms := startMembers(t, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := ms[0].ring.AllReduce(ctx, Op{Run: "c", Epoch: 1, Members: addrs(ms)}, make([]float32, 10000))
		errc <- err
	}()
	cancel()
	err := <-errc
	var pe *PeerError
	if !errors.Is(err, context.Canceled) || errors.As(err, &pe) || errors.Is(err, ErrAborted) {
		t.Errorf("err = %v, want context.Canceled and no PeerError", err)
	}
}

// TestAbort: a newer epoch, by Abort or by a newer operation, ends older operations at once.
func TestAbort(t *testing.T) {
	for _, how := range []string{"Abort", "newer op"} {
		t.Run(how, func(t *testing.T) {
			ms := startMembers(t, 3, nil)
			errc := make(chan error, 1)
			go func() {
				// Member 2 never joins, so the operation waits until aborted.
				_, err := ms[0].ring.AllReduce(context.Background(), Op{Run: "a", Epoch: 4, Members: addrs(ms)}, make([]float32, 1000))
				errc <- err
			}()
			waitActive(t, ms[0].ring, 4)
			if how == "Abort" {
				ms[0].ring.Abort(5)
			} else {
				go ms[0].ring.AllReduce(context.Background(), Op{Run: "a", Epoch: 5, Members: addrs(ms), Timeout: 100 * time.Millisecond}, make([]float32, 1000))
			}
			if err := <-errc; !errors.Is(err, ErrAborted) {
				t.Errorf("err = %v, want ErrAborted", err)
			}
			_, err := ms[0].ring.AllReduce(context.Background(), Op{Run: "a", Epoch: 4, Step: 1, Members: addrs(ms)}, make([]float32, 10))
			if !errors.Is(err, ErrAborted) {
				t.Errorf("op of an old epoch: err = %v, want ErrAborted", err)
			}
		})
	}
}

// waitFor polls cond, which another goroutine makes true without an event to wait on,
// and fails the test if it does not hold within 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
	}
}

// waitActive waits until r has an active operation of the epoch.
func waitActive(t *testing.T, r *Ring, epoch uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("an operation of epoch %d active", epoch), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for k, st := range r.ops {
			if k.epoch == epoch && st.active {
				return true
			}
		}
		return false
	})
}

// sink is a ring service that takes every piece and does nothing.
type sink struct{ ringpb.UnimplementedRingServer }

func (sink) Pipe(s ringpb.Ring_PipeServer) error {
	// As a member on another host answers a neighbour's hostKey.
	if err := s.SendHeader(nil); err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			return nil
		}
	}
}

func startSink(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ringpb.RegisterRingServer(srv, sink{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// rawPipe opens a Pipe stream to m as if from member from.
func rawPipe(t *testing.T, m *member, from string) ringpb.Ring_PipeClient {
	t.Helper()
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), fromKey, from))
	t.Cleanup(func() { cancel(); conn.Close() })
	s, err := ringpb.NewRingClient(conn).Pipe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStaleEpochRefused(t *testing.T) {
	ms := startMembers(t, 1, nil)
	ms[0].ring.Abort(7)
	s := rawPipe(t, ms[0], "127.0.0.1:1")
	if err := s.Send(&ringpb.Piece{Run: "r", Epoch: 6, Step: 3, Phase: ringpb.Phase_PHASE_REDUCE_SCATTER, Payload: []byte{1, 2, 3, 4}}); err != nil {
		t.Fatal(err)
	}
	ref, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ref.Code != ringpb.RefusalCode_REFUSAL_STALE_EPOCH || ref.CurrentEpoch != 7 || ref.Epoch != 6 || ref.Step != 3 {
		t.Errorf("refusal %v, want stale epoch 6 at 7", ref)
	}
	// The stream stays usable for current epochs.
	if err := s.Send(&ringpb.Piece{Run: "r", Epoch: 7, Payload: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Errorf("after CloseSend: %v, want EOF", err)
	}
}

// TestGarbledPiece: bad pieces from the left neighbour end the operation with a PeerError
// naming it, wrapping ErrCorrupt; nothing panics.
func TestGarbledPiece(t *testing.T) {
	const l = 1000 // chunks of 500: two pieces each with 1 KiB pieces
	codec := Codec{QuantInt8, CompressZstd}
	enc, _ := NewEncoder(codec)
	good := enc.Encode(nil, make([]float32, 256), nil)
	piece := func(edit func(*ringpb.Piece)) *ringpb.Piece {
		p := &ringpb.Piece{Run: "g", Epoch: 1, Phase: ringpb.Phase_PHASE_REDUCE_SCATTER, Chunk: 0, Piece: 0,
			Codec: codec.wireID(), Length: l, Payload: good}
		edit(p)
		return p
	}
	for _, tc := range []struct {
		name string
		msgs []*ringpb.Piece
	}{
		{"bad zstd", []*ringpb.Piece{piece(func(p *ringpb.Piece) { p.Payload = []byte("garbage garbage garbage") })}},
		{"truncated", []*ringpb.Piece{piece(func(p *ringpb.Piece) { p.Payload = good[:len(good)-3] })}},
		{"wrong codec", []*ringpb.Piece{piece(func(p *ringpb.Piece) { p.Codec = 0 })}},
		{"wrong length", []*ringpb.Piece{piece(func(p *ringpb.Piece) { p.Length = 999 })}},
		{"chunk out of range", []*ringpb.Piece{piece(func(p *ringpb.Piece) { p.Chunk = 9 })}},
		{"piece out of range", []*ringpb.Piece{piece(func(p *ringpb.Piece) { p.Piece = 2 })}},
		{"own chunk", []*ringpb.Piece{piece(func(p *ringpb.Piece) { p.Chunk = 1 })}},
		{"bad phase", []*ringpb.Piece{piece(func(p *ringpb.Piece) { p.Phase = 7 })}},
		{"duplicate", []*ringpb.Piece{piece(func(*ringpb.Piece) {}), piece(func(*ringpb.Piece) {})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := startMembers(t, 1, nil)
			fake := startSink(t) // the left (and right) neighbour
			s := rawPipe(t, ms[0], fake)
			for _, m := range tc.msgs {
				if err := s.Send(m); err != nil {
					t.Fatal(err)
				}
			}
			// Members [fake, self]: self is rank 1, owns chunk 0 and sends chunk 1 first.
			_, err := ms[0].ring.AllReduce(context.Background(), Op{Run: "g", Epoch: 1, Members: []string{fake, ms[0].addr},
				Codec: codec, Timeout: 5 * time.Second}, make([]float32, l))
			var pe *PeerError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a PeerError", err)
			}
			if pe.Peer == fake && errors.Is(err, ErrCorrupt) {
				return
			}
			t.Fatalf("err = %v, want ErrCorrupt from %s", err, fake)
		})
	}
}

// TestCredentials: members whose streams carry what Authorize wants reduce together; a
// member whose streams do not is refused with Unauthenticated, as is a stock gRPC client,
// and the refusal names its address.
func TestCredentials(t *testing.T) {
	key := func(k string) func(*Config) {
		return func(c *Config) {
			c.Metadata = func(string) metadata.MD { return metadata.Pairs("x-key", k) }
			c.Authorize = func(remote, method string, md metadata.MD) error {
				if v := md.Get("x-key"); len(v) != 1 || v[0] != "k" {
					return status.Errorf(codes.Unauthenticated, "bad key from %s for %s", remote, method)
				}
				return nil
			}
		}
	}
	good := startMembers(t, 2, key("k"))
	bufs := [][]float32{{1, 2, 3, 4}, {10, 20, 30, 40}}
	for i, o := range reduceAll(context.Background(), rings(good), Op{Run: "a", Epoch: 1, Members: addrs(good)}, bufs, nil) {
		if o.err != nil || bufs[i][3] != 44 {
			t.Fatalf("member %d: %v, %v", i, o.err, bufs[i])
		}
	}
	stranger := startMembers(t, 1, key("not k"))
	op := Op{Run: "a", Epoch: 1, Step: 1, Members: []string{stranger[0].addr, good[0].addr}, Timeout: 5 * time.Second}
	var pe *PeerError
	_, err := stranger[0].ring.AllReduce(context.Background(), op, make([]float32, 4))
	if !errors.As(err, &pe) || pe.Peer != good[0].addr || !strings.Contains(err.Error(), "bad key from 127.0.0.1:") {
		t.Errorf("stranger: %v, want a PeerError naming %s with the refusal", err, good[0].addr)
	}
	s := rawPipe(t, good[0], "127.0.0.1:1")
	s.Send(&ringpb.Piece{Run: "r", Epoch: 1})
	recv := make(chan error, 1)
	go func() { _, err := s.Recv(); recv <- err }()
	select {
	case err := <-recv:
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("stock client without the key: %v, want Unauthenticated", err)
		}
	case <-time.After(10 * time.Second): // the piece was taken: the cleanup ends the stream
		t.Error("stock client without the key: no refusal")
	}
}
