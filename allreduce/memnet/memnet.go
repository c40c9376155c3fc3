// Package memnet is an in-memory network for tests and simulations. Named nodes open ordered,
// flow-controlled, bidirectional streams of messages to each other over links with latency,
// jitter, bandwidth and loss; a test can cut links, isolate nodes and crash them.
//
// It behaves as TCP surfaces to a program: a stream delivers its messages in order or breaks;
// a cut link is silence (messages wait in the network, and senders block once a window of
// bytes is in flight) until it heals; a lost message breaks its stream at the moment it would
// have arrived; a crashed node's streams are reset. Only messages of different streams can
// overtake each other.
//
// No goroutine runs per message or per stream: a message waits in its stream's queue with the
// time it arrives, and the receiver takes it once that time has come. Time is the time
// package's, so inside a testing/synctest bubble the network runs on the bubble's virtual
// clock, and a ring of hundreds of nodes takes the simulated time of its messages alone.
package memnet

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"sync"
	"time"
)

// Message is what streams carry; Size is its length on the modelled wire, in bytes.
type Message interface{ Size() int }

// Releaser is implemented by messages that hold buffers: the network releases the messages
// it drops (lost, reset, never received).
type Releaser interface{ Release() }

// Link is one direction of the path between two nodes.
type Link struct {
	// Latency is the one-way propagation delay.
	Latency time.Duration
	// Jitter adds a delay drawn uniformly from [0, Jitter) to each message; a stream stays in
	// order, so only messages of different streams are reordered.
	Jitter time.Duration
	// Bandwidth in bytes per second, shared by every stream of the link: a message occupies
	// the link for Size/Bandwidth after the messages before it. Zero is unlimited.
	Bandwidth float64
	// Loss is the probability that a message is lost, which breaks its stream.
	Loss float64
}

// Config configures a Net.
type Config struct {
	// Seed makes jitter and loss reproducible: each link draws from its own generator, seeded
	// by Seed and the link's ends, in the order of the messages sent on it.
	Seed uint64
	// Link is every link's behaviour until SetLink changes it.
	Link Link
	// Window is the number of bytes a stream direction holds in flight or unread before Send
	// blocks (HTTP/2's stream window). Default DefaultWindow.
	Window int
}

// DefaultWindow is the default Config.Window.
const DefaultWindow = 8 << 20

// Errors of streams and dials.
var (
	// ErrRefused: nothing listens at the address (it never did, or it crashed).
	ErrRefused = errors.New("memnet: connection refused")
	// ErrReset: the other end closed the stream abruptly or crashed.
	ErrReset = errors.New("memnet: connection reset by peer")
	// ErrLost: a message of the stream was lost.
	ErrLost = errors.New("memnet: message lost, stream broken")
	// ErrClosed: this end was closed (Conn.Close, the dial's context, Listener.Close) or its
	// node crashed.
	ErrClosed = errors.New("memnet: use of closed connection")
)

// Net is the network. Its methods are safe for concurrent use.
type Net struct {
	cfg Config

	mu        sync.Mutex
	links     map[[2]string]*link
	listeners map[string]*Listener
	crashed   map[string]bool
	pipes     map[*pipe]struct{}
	changed   chan struct{} // closed and replaced when a cut heals or a node listens
}

type link struct {
	Link
	cut  bool
	busy time.Time // when the link has sent what it was given
	rng  *rand.Rand
}

// New returns a network with no nodes.
func New(cfg Config) (*Net, error) {
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Window < 0 {
		return nil, fmt.Errorf("memnet: negative window %d", cfg.Window)
	}
	if err := cfg.Link.validate(); err != nil {
		return nil, err
	}
	return &Net{
		cfg:       cfg,
		links:     map[[2]string]*link{},
		listeners: map[string]*Listener{},
		crashed:   map[string]bool{},
		pipes:     map[*pipe]struct{}{},
		changed:   make(chan struct{}),
	}, nil
}

func (l Link) validate() error {
	if l.Latency < 0 || l.Jitter < 0 || l.Bandwidth < 0 || !(l.Loss >= 0 && l.Loss <= 1) {
		return fmt.Errorf("memnet: invalid link %+v", l)
	}
	return nil
}

// SetLink sets the behaviour of the link from one node to another (one direction). Messages
// already sent keep their arrival times.
func (n *Net) SetLink(from, to string, l Link) error {
	if err := l.validate(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.link(from, to).Link = l
	return nil
}

func (n *Net) link(from, to string) *link {
	k := [2]string{from, to}
	l := n.links[k]
	if l == nil {
		h := fnv.New64a()
		h.Write([]byte(from))
		h.Write([]byte{0})
		h.Write([]byte(to))
		l = &link{Link: n.cfg.Link, rng: rand.New(rand.NewPCG(n.cfg.Seed, h.Sum64()))}
		n.links[k] = l
	}
	return l
}

// notifyLocked wakes dials waiting for a cut to heal or a node to listen.
func (n *Net) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// Cut silences the path between a and b in both directions until Heal: messages sent, and
// those still on their way, wait in the network; dials between them wait.
func (n *Net) Cut(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cutLocked(a, b)
	n.cutLocked(b, a)
}

// Isolate cuts every path to and from a, including those of nodes that appear later.
func (n *Net) Isolate(a string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cutLocked(a, "")
	n.cutLocked("", a)
}

// cutLocked cuts from → to; an empty name stands for every node.
func (n *Net) cutLocked(from, to string) {
	n.link(from, to).cut = true
	now := time.Now()
	for p := range n.pipes {
		for _, h := range p.halves() {
			if n.isCutLocked(h.from, h.to) {
				h.hold(now)
			}
		}
	}
}

func (n *Net) isCutLocked(from, to string) bool {
	for _, k := range [][2]string{{from, to}, {from, ""}, {"", to}} {
		if l := n.links[k]; l != nil && l.cut {
			return true
		}
	}
	return false
}

// Heal ends the cuts between a and b (and those of Isolate on either).
func (n *Net) Heal(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, l := range n.links {
		if (k[0] == a || k[0] == b || k[0] == "") && (k[1] == a || k[1] == b || k[1] == "") {
			l.cut = false
		}
	}
	n.releaseHeldLocked()
}

// HealAll ends every cut.
func (n *Net) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.links {
		l.cut = false
	}
	n.releaseHeldLocked()
}

// releaseHeldLocked sends on their way the held messages of links no longer cut, in order,
// as if they had been sent now.
func (n *Net) releaseHeldLocked() {
	now := time.Now()
	for p := range n.pipes {
		for _, h := range p.halves() {
			if h.held == 0 || n.isCutLocked(h.from, h.to) {
				continue
			}
			l := n.link(h.from, h.to)
			for i := h.head; i < len(h.q); i++ {
				if e := &h.q[i]; e.held {
					e.held, e.at = false, n.arrivalLocked(l, h, now, e.size)
				}
			}
			h.held = 0
			h.signalRecv()
		}
	}
	n.notifyLocked()
}

// arrivalLocked is when a message of size bytes sent at now on l arrives at h's receiver:
// after the link has sent what it was given before, its own serialisation, the latency and
// jitter, and never before the stream's previous message.
func (n *Net) arrivalLocked(l *link, h *half, now time.Time, size int) time.Time {
	start := now
	if l.busy.After(start) {
		start = l.busy
	}
	if l.Bandwidth > 0 {
		start = start.Add(time.Duration(float64(size) / l.Bandwidth * float64(time.Second)))
	}
	l.busy = start
	at := start.Add(l.Latency)
	if l.Jitter > 0 {
		at = at.Add(time.Duration(l.rng.Int64N(int64(l.Jitter))))
	}
	if at.Before(h.last) {
		at = h.last
	}
	h.last = at
	return at
}

// Crash kills node a: its listener closes, its streams break (their other ends see ErrReset
// once the news has crossed the link), and dials to it are refused until it listens again.
func (n *Net) Crash(a string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.crashed[a] = true
	if lis := n.listeners[a]; lis != nil {
		lis.closeLocked()
	}
	for p := range n.pipes {
		switch a {
		case p.a.local:
			n.abortLocked(p.a)
		case p.b.local:
			n.abortLocked(p.b)
		}
	}
}

// Listener accepts the streams dialed to one address.
type Listener struct {
	n       *Net
	addr    string
	pending []*Conn
	wake    chan struct{} // cap 1
	closed  bool
	done    chan struct{}
}

// Listen makes addr reachable. A crashed node listening again is a restart.
func (n *Net) Listen(addr string) (*Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listeners[addr] != nil {
		return nil, fmt.Errorf("memnet: listen %s: address in use", addr)
	}
	delete(n.crashed, addr)
	l := &Listener{n: n, addr: addr, wake: make(chan struct{}, 1), done: make(chan struct{})}
	n.listeners[addr] = l
	n.notifyLocked()
	return l, nil
}

// Addr is the address listened on.
func (l *Listener) Addr() string { return l.addr }

// Accept returns the next stream dialed to the address. It fails with ErrClosed once the
// listener is closed (or its node crashed), or with ctx's error.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	for {
		l.n.mu.Lock()
		if l.closed {
			l.n.mu.Unlock()
			return nil, ErrClosed
		}
		if len(l.pending) > 0 {
			c := l.pending[0]
			l.pending = l.pending[1:]
			l.n.mu.Unlock()
			return c, nil
		}
		l.n.mu.Unlock()
		select {
		case <-l.wake:
		case <-l.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close stops listening; streams not yet accepted are reset. Accepted ones live on.
func (l *Listener) Close() error {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	l.closeLocked()
	return nil
}

func (l *Listener) closeLocked() {
	if l.closed {
		return
	}
	l.closed = true
	close(l.done)
	if l.n.listeners[l.addr] == l {
		delete(l.n.listeners, l.addr)
	}
	for _, c := range l.pending {
		l.n.abortLocked(c)
	}
	l.pending = nil
}

// Dial opens a stream from node from to the listener at to. It waits while the path is cut
// (as a TCP handshake would retry) and fails with ErrRefused if nothing listens at to. The
// stream is closed, as by Close, when ctx is done.
func (n *Net) Dial(ctx context.Context, from, to string) (*Conn, error) {
	for {
		n.mu.Lock()
		switch {
		case n.crashed[from]:
			n.mu.Unlock()
			return nil, fmt.Errorf("memnet: dial %s from crashed %s: %w", to, from, ErrClosed)
		case n.isCutLocked(from, to) || n.isCutLocked(to, from):
			ch := n.changed
			n.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("memnet: dial %s: %w", to, ctx.Err())
			}
		}
		lis := n.listeners[to]
		if lis == nil {
			n.mu.Unlock()
			return nil, fmt.Errorf("memnet: dial %s: %w", to, ErrRefused)
		}
		p := n.newPipeLocked(from, to)
		lis.pending = append(lis.pending, p.b)
		select {
		case lis.wake <- struct{}{}:
		default:
		}
		n.mu.Unlock()
		c := p.a
		stop := context.AfterFunc(ctx, func() { c.Close() })
		n.mu.Lock()
		c.stop = stop
		n.mu.Unlock()
		return c, nil
	}
}

// pipe is one stream: two halves and their two ends.
type pipe struct {
	ab, ba *half
	a, b   *Conn // a dialed b
}

func (p *pipe) halves() [2]*half { return [2]*half{p.ab, p.ba} }

func (n *Net) newPipeLocked(from, to string) *pipe {
	p := &pipe{ab: newHalf(from, to), ba: newHalf(to, from)}
	p.a = &Conn{n: n, p: p, local: from, remote: to, out: p.ab, in: p.ba, done: make(chan struct{})}
	p.b = &Conn{n: n, p: p, local: to, remote: from, out: p.ba, in: p.ab, done: make(chan struct{})}
	n.pipes[p] = struct{}{}
	return p
}

// half is one direction of a stream. Guarded by Net.mu.
type half struct {
	from, to string
	q        []entry
	head     int
	held     int       // entries waiting for a cut to heal
	closed   bool      // CloseSend was called
	inflight int       // bytes sent and not yet received
	last     time.Time // arrival of the newest entry
	// end, once set, is when the stream stops delivering and the error the receiver then gets
	// (io.EOF after CloseSend). Entries arriving after it are dropped.
	end    *entry
	recv   chan struct{} // cap 1: entries, an end or a heal for the receiver
	credit chan struct{} // cap 1: window space or an end for the sender
}

// entry is a message, or the end of what the sender sends (m nil, err io.EOF), or a break.
type entry struct {
	m    Message
	size int
	at   time.Time
	held bool
	err  error
}

func newHalf(from, to string) *half {
	return &half{from: from, to: to, recv: make(chan struct{}, 1), credit: make(chan struct{}, 1)}
}

func (h *half) signalRecv() {
	select {
	case h.recv <- struct{}{}:
	default:
	}
}

func (h *half) signalCredit() {
	select {
	case h.credit <- struct{}{}:
	default:
	}
}

// hold makes the entries not yet arrived at now wait for the cut to heal.
func (h *half) hold(now time.Time) {
	for i := h.head; i < len(h.q); i++ {
		if e := &h.q[i]; !e.held && e.at.After(now) {
			e.held = true
			h.held++
		}
	}
}

// breakAt ends the half at time at with err, unless it ends earlier already.
func (h *half) breakAt(at time.Time, err error) {
	if h.end != nil && !h.end.at.After(at) {
		return
	}
	h.end = &entry{at: at, err: err}
	h.signalRecv()
	h.signalCredit()
}

// drop releases every entry still queued.
func (h *half) drop() {
	for i := h.head; i < len(h.q); i++ {
		release(h.q[i].m)
		h.q[i] = entry{}
	}
	h.q, h.head, h.held = nil, 0, 0
}

func release(m Message) {
	if r, ok := m.(Releaser); ok {
		r.Release()
	}
}

// Conn is one end of a stream. Send and Recv may be called from different goroutines; each
// of them from one at a time.
type Conn struct {
	n             *Net
	p             *pipe
	local, remote string
	out, in       *half
	closed        bool
	done          chan struct{} // closed by Close or a crash
	stop          func() bool   // unregisters the dial context's AfterFunc
}

// Local is the name of this end's node.
func (c *Conn) Local() string { return c.local }

// Remote is the name of the other end's node.
func (c *Conn) Remote() string { return c.remote }

// Send queues m for the other end, waiting while the window is full. It takes m whatever it
// returns: a message the network does not deliver is released. It fails once the stream is
// broken or closed; a message lost on the way breaks the stream, and Send reports that from
// the next call on.
func (c *Conn) Send(m Message) error {
	size := m.Size()
	n := c.n
	n.mu.Lock()
	h := c.out
	for {
		if err := c.sendErrLocked(); err != nil {
			n.mu.Unlock()
			release(m)
			return err
		}
		if h.inflight == 0 || h.inflight+size <= n.cfg.Window {
			break
		}
		n.mu.Unlock()
		select {
		case <-h.credit:
		case <-c.done:
		}
		n.mu.Lock()
	}
	now := time.Now()
	at, ok := n.enqueueLocked(h, entry{m: m, size: size}, now)
	if !ok {
		// The receiver takes what came before, then finds the stream broken; the sender
		// learns at once, as the acknowledgements it waits for stop coming.
		h.breakAt(at, ErrLost)
		c.in.breakAt(now, ErrLost)
		n.mu.Unlock()
		release(m)
		return nil
	}
	n.mu.Unlock()
	return nil
}

// enqueueLocked puts e on its way to h's receiver and returns when it arrives; ok is false if
// the link lost it, in which case e was not queued.
func (n *Net) enqueueLocked(h *half, e entry, now time.Time) (at time.Time, ok bool) {
	if e.m != nil {
		h.inflight += e.size
	}
	if n.isCutLocked(h.from, h.to) {
		e.held = true
		h.held++
	} else {
		l := n.link(h.from, h.to)
		e.at = n.arrivalLocked(l, h, now, e.size)
		if e.m != nil && l.Loss > 0 && l.rng.Float64() < l.Loss {
			h.inflight -= e.size
			return e.at, false
		}
	}
	h.q = append(h.q, e)
	h.signalRecv()
	return e.at, true
}

func (c *Conn) sendErrLocked() error {
	switch {
	case c.closed:
		return ErrClosed
	case c.out.end != nil:
		return c.out.end.err
	case c.out.closed:
		return errors.New("memnet: send after CloseSend")
	}
	return nil
}

// Recv returns the next message once it has arrived, or io.EOF after the other end's
// CloseSend, or the error that broke the stream (after the messages that arrived before).
func (c *Conn) Recv() (Message, error) {
	n := c.n
	h := c.in
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		n.mu.Lock()
		if c.closed {
			n.mu.Unlock()
			return nil, ErrClosed
		}
		now := time.Now()
		wait := time.Duration(-1) // until woken
		if e := h.peek(); e != nil && !e.held && (h.end == nil || !e.at.After(h.end.at)) {
			if e.at.After(now) {
				wait = e.at.Sub(now)
			} else if e.m == nil {
				n.mu.Unlock()
				return nil, e.err // the end of the stream stays at its head
			} else {
				m := h.pop()
				n.mu.Unlock()
				return m, nil
			}
		} else if h.end != nil {
			if !h.end.at.After(now) {
				h.drop()
				n.mu.Unlock()
				return nil, h.end.err
			}
			wait = h.end.at.Sub(now)
		}
		n.mu.Unlock()
		var timeout <-chan time.Time
		if wait >= 0 {
			if t == nil {
				t = time.NewTimer(wait)
			} else {
				t.Reset(wait)
			}
			timeout = t.C
		}
		select {
		case <-h.recv:
		case <-timeout:
		case <-c.done:
		}
	}
}

func (h *half) peek() *entry {
	if h.head == len(h.q) {
		return nil
	}
	return &h.q[h.head]
}

// pop removes the head entry, a message, and returns window space to the sender.
func (h *half) pop() Message {
	e := h.q[h.head]
	h.q[h.head] = entry{}
	h.head++
	if h.head == len(h.q) {
		h.q, h.head = h.q[:0], 0
	}
	h.inflight -= e.size
	h.signalCredit()
	return e.m
}

// CloseSend tells the other end that no more messages follow: it receives io.EOF after them.
func (c *Conn) CloseSend() error {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	if err := c.sendErrLocked(); err != nil {
		return err
	}
	c.out.closed = true
	c.n.enqueueLocked(c.out, entry{err: io.EOF}, time.Now())
	return nil
}

// Close ends the stream abruptly: the other end gets ErrReset once the news has crossed the
// link, and this end's calls return ErrClosed. It is idempotent.
func (c *Conn) Close() error {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	c.n.abortLocked(c)
	return nil
}

// abortLocked closes c and resets the other end.
func (n *Net) abortLocked(c *Conn) {
	if c.closed {
		return
	}
	c.closed = true
	close(c.done)
	if c.stop != nil {
		c.stop()
	}
	now := time.Now()
	// What c sent and the other end has not received by the time the reset arrives is lost,
	// and c will never read what was sent to it.
	c.out.breakAt(now.Add(n.link(c.local, c.remote).Latency), ErrReset)
	c.in.breakAt(now, ErrReset)
	c.in.drop()
	if other := c.p.a; other == c {
		n.finishLocked(c.p, c.p.b)
	} else {
		n.finishLocked(c.p, other)
	}
}

// finishLocked forgets the pipe once both ends are closed.
func (n *Net) finishLocked(p *pipe, other *Conn) {
	if other.closed {
		p.ab.drop()
		p.ba.drop()
		delete(n.pipes, p)
	}
}
