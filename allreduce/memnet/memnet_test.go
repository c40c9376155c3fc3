package memnet

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// msg is a test message that counts its releases.
type msg struct {
	id, size int
	released *atomic.Int64
}

func (m *msg) Size() int { return m.size }
func (m *msg) Release() {
	if m.released != nil {
		m.released.Add(1)
	}
}

func newNet(t *testing.T, cfg Config) *Net {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pair dials a stream from "a" to a listener at "b" and returns both ends.
func pair(t *testing.T, n *Net, ctx context.Context) (a, b *Conn) {
	t.Helper()
	lis, err := n.Listen("b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	a, err = n.Dial(ctx, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	b, err = lis.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func recvID(t *testing.T, c *Conn) int {
	t.Helper()
	m, err := c.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return m.(*msg).id
}

// TestTiming: messages arrive after the link has serialised them one after another, plus
// the latency, in order.
func TestTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lat, bw, size = 50 * time.Microsecond, 1e9, 10_000 // 10 µs per message on the wire
		n := newNet(t, Config{Link: Link{Latency: lat, Bandwidth: bw}})
		a, b := pair(t, n, t.Context())
		start := time.Now()
		for i := range 5 {
			if err := a.Send(&msg{id: i, size: size}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 5 {
			if got := recvID(t, b); got != i {
				t.Fatalf("message %d arrived as %d", got, i)
			}
			want := lat + time.Duration(i+1)*10*time.Microsecond
			if got := time.Since(start); got != want {
				t.Errorf("message %d after %v, want %v", i, got, want)
			}
		}
	})
}

// TestJitter: with jitter, each stream stays in order, messages of two streams overtake one
// another, and the same seed gives the same arrival times.
func TestJitter(t *testing.T) {
	run := func(seed uint64) []time.Duration {
		var times []time.Duration
		synctest.Test(t, func(t *testing.T) {
			n := newNet(t, Config{Seed: seed, Link: Link{Latency: time.Millisecond, Jitter: time.Millisecond}})
			lis, _ := n.Listen("b")
			defer lis.Close()
			var ends [2][2]*Conn
			for s := range ends {
				a, err := n.Dial(t.Context(), "a", "b")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := lis.Accept(t.Context())
				ends[s] = [2]*Conn{a, b}
				defer a.Close()
				defer b.Close()
			}
			start := time.Now()
			const k = 50
			for i := range k {
				for s := range ends {
					ends[s][0].Send(&msg{id: i, size: 1})
				}
				time.Sleep(100 * time.Microsecond)
			}
			arrive := [2][]time.Duration{}
			done := make(chan struct{})
			for s := range ends {
				go func() {
					defer func() { done <- struct{}{} }()
					for i := range k {
						if got := recvID(t, ends[s][1]); got != i {
							t.Errorf("stream %d: message %d arrived as %d", s, got, i)
						}
						arrive[s] = append(arrive[s], time.Since(start))
					}
				}()
			}
			<-done
			<-done
			overtaken := 0
			for i := range k {
				for j := i + 1; j < k; j++ {
					if arrive[1][j] < arrive[0][i] {
						overtaken++
					}
				}
			}
			if overtaken == 0 {
				t.Error("no message of one stream overtook an earlier one of the other")
			}
			times = append(arrive[0], arrive[1]...)
		})
		return times
	}
	x, y, z := run(1), run(1), run(2)
	same := func(a, b []time.Duration) bool {
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	if !same(x, y) {
		t.Error("the same seed gave different arrival times")
	}
	if same(x, z) {
		t.Error("different seeds gave the same arrival times")
	}
}

// TestWindow: Send blocks once a window of bytes is unread, and goes on when the receiver
// reads.
func TestWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNet(t, Config{Window: 100})
		a, b := pair(t, n, t.Context())
		for i := range 4 {
			a.Send(&msg{id: i, size: 25})
		}
		sent := make(chan error, 1)
		go func() { sent <- a.Send(&msg{id: 4, size: 25}) }()
		synctest.Wait()
		select {
		case <-sent:
			t.Fatal("Send did not block on a full window")
		default:
		}
		recvID(t, b)
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		// A message larger than the window still goes once the window is empty.
		for range 4 {
			recvID(t, b)
		}
		if err := a.Send(&msg{id: 5, size: 1000}); err != nil {
			t.Fatal(err)
		}
		if got := recvID(t, b); got != 5 {
			t.Fatalf("got %d", got)
		}
	})
}

// TestCut: a cut holds messages (and CloseSend's end) and dials; healing delivers them in
// order, a latency after the heal.
func TestCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lat = 5 * time.Millisecond
		n := newNet(t, Config{Link: Link{Latency: lat}})
		a, b := pair(t, n, t.Context())
		a.Send(&msg{id: 0, size: 1})
		time.Sleep(lat / 2)
		n.Cut("a", "b")
		a.Send(&msg{id: 1, size: 1})
		a.CloseSend()
		got := make(chan int, 3)
		go func() {
			defer close(got)
			for {
				m, err := b.Recv()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				got <- m.(*msg).id
			}
		}()
		dialed := make(chan error, 1)
		go func() {
			c, err := n.Dial(t.Context(), "a", "b")
			if err == nil {
				c.Close()
			}
			dialed <- err
		}()
		time.Sleep(time.Second)
		synctest.Wait()
		if len(got) != 0 || len(dialed) != 0 {
			t.Fatalf("across a cut: %d messages, %d dials", len(got), len(dialed))
		}
		cut := time.Now()
		n.Heal("b", "a")
		for want := range 2 {
			if id := <-got; id != want {
				t.Fatalf("got %d, want %d", id, want)
			}
			if d := time.Since(cut); d != lat {
				t.Errorf("message %d %v after the heal, want %v", want, d, lat)
			}
		}
		if _, ok := <-got; ok {
			t.Error("more than two messages")
		}
		if err := <-dialed; err != nil {
			t.Errorf("dial after heal: %v", err)
		}

		// A dial across a cut gives up with its context.
		n.Isolate("b")
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := n.Dial(ctx, "a", "b"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("dial to an isolated node: %v", err)
		}
	})
}

// TestLoss: a lost message breaks its stream: the receiver gets what came before, then
// ErrLost; the sender's next Send fails. Every message is received or released.
func TestLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var released atomic.Int64
		n := newNet(t, Config{Link: Link{Latency: time.Millisecond}})
		a, b := pair(t, n, t.Context())
		a.Send(&msg{id: 0, size: 1, released: &released})
		n.SetLink("a", "b", Link{Latency: time.Millisecond, Loss: 1})
		if err := a.Send(&msg{id: 1, size: 1, released: &released}); err != nil {
			t.Fatalf("the lost message's Send: %v", err)
		}
		if err := a.Send(&msg{id: 2, size: 1, released: &released}); !errors.Is(err, ErrLost) {
			t.Fatalf("Send after a loss: %v, want ErrLost", err)
		}
		if got := recvID(t, b); got != 0 {
			t.Fatalf("got %d", got)
		}
		if _, err := b.Recv(); !errors.Is(err, ErrLost) {
			t.Fatalf("Recv after the lost message: %v, want ErrLost", err)
		}
		if _, err := a.Recv(); !errors.Is(err, ErrLost) {
			t.Fatalf("sender's Recv: %v, want ErrLost", err)
		}
		if r := released.Load(); r != 2 {
			t.Errorf("%d messages released, want 2 (the lost one and the refused one)", r)
		}
	})
}

// TestLossDeterministic: which message a lossy link loses depends on the seed alone.
func TestLossDeterministic(t *testing.T) {
	run := func(seed uint64) int {
		var lost int
		synctest.Test(t, func(t *testing.T) {
			n := newNet(t, Config{Seed: seed, Link: Link{Loss: 0.05}})
			a, b := pair(t, n, t.Context())
			for i := 0; ; i++ {
				a.Send(&msg{id: i, size: 1})
				if _, err := b.Recv(); err != nil {
					lost = i
					return
				}
			}
		})
		return lost
	}
	if x, y := run(7), run(7); x != y {
		t.Errorf("seed 7 lost message %d, then %d", x, y)
	}
}

// TestCrash: a crashed node's streams are reset (its peers learn a latency later), dials to
// it are refused, and it can listen again.
func TestCrash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lat = time.Millisecond
		var released atomic.Int64
		n := newNet(t, Config{Link: Link{Latency: lat}})
		a, b := pair(t, n, t.Context())
		a.Send(&msg{id: 0, size: 1, released: &released}) // arrives at lat: never read
		b.Send(&msg{id: 1, size: 1, released: &released}) // from the crashed node, in flight
		n.Crash("b")
		start := time.Now()
		if got := recvID(t, a); got != 1 {
			t.Fatalf("got %d", got)
		}
		if _, err := a.Recv(); !errors.Is(err, ErrReset) {
			t.Fatalf("peer of a crashed node: %v, want ErrReset", err)
		}
		if d := time.Since(start); d != lat {
			t.Errorf("reset seen after %v, want %v", d, lat)
		}
		if err := a.Send(&msg{id: 2, size: 1, released: &released}); !errors.Is(err, ErrReset) {
			t.Errorf("Send to a crashed node: %v, want ErrReset", err)
		}
		if _, err := b.Recv(); !errors.Is(err, ErrClosed) {
			t.Errorf("crashed end: %v, want ErrClosed", err)
		}
		if _, err := n.Dial(t.Context(), "a", "b"); !errors.Is(err, ErrRefused) {
			t.Errorf("dial to a crashed node: %v, want ErrRefused", err)
		}
		if _, err := n.Dial(t.Context(), "b", "a"); !errors.Is(err, ErrClosed) {
			t.Errorf("dial from a crashed node: %v, want ErrClosed", err)
		}
		a.Close()
		if r := released.Load(); r != 2 {
			t.Errorf("%d messages released, want 2", r)
		}
		lis, err := n.Listen("b")
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		c, err := n.Dial(t.Context(), "a", "b")
		if err != nil {
			t.Fatalf("dial after restart: %v", err)
		}
		c.Close()
	})
}

// TestCloseAndContext: Close resets the other end; the dial's context closes the stream and
// unblocks a Send waiting for window space.
func TestCloseAndContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNet(t, Config{Window: 10})
		ctx, cancel := context.WithCancel(t.Context())
		a, b := pair(t, n, ctx)
		a.Send(&msg{size: 10})
		sent := make(chan error, 1)
		go func() { sent <- a.Send(&msg{size: 10}) }()
		synctest.Wait()
		cancel()
		if err := <-sent; !errors.Is(err, ErrClosed) {
			t.Errorf("blocked Send after cancel: %v, want ErrClosed", err)
		}
		if _, err := b.Recv(); err != nil {
			t.Errorf("message sent before the close: %v", err)
		}
		if _, err := b.Recv(); !errors.Is(err, ErrReset) {
			t.Errorf("after the other end closed: %v, want ErrReset", err)
		}
		if err := b.CloseSend(); !errors.Is(err, ErrReset) {
			t.Errorf("CloseSend on a reset stream: %v", err)
		}
	})
}

// TestListenerClose: Accept ends with ErrClosed, streams not yet accepted are reset, and the
// address is free again.
func TestListenerClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNet(t, Config{})
		idle, _ := n.Listen("idle")
		errc := make(chan error, 1)
		go func() {
			_, err := idle.Accept(t.Context())
			errc <- err
		}()
		synctest.Wait()
		idle.Close()
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("Accept after Close: %v", err)
		}

		lis, _ := n.Listen("x")
		if _, err := n.Listen("x"); err == nil {
			t.Error("listened twice on one address")
		}
		c, _ := n.Dial(t.Context(), "y", "x") // never accepted
		defer c.Close()
		lis.Close()
		if _, err := c.Recv(); !errors.Is(err, ErrReset) {
			t.Errorf("stream of a closed listener: %v, want ErrReset", err)
		}
		lis2, err := n.Listen("x")
		if err != nil {
			t.Fatal(err)
		}
		lis2.Close()
	})
}
