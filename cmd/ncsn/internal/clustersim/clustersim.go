// Package clustersim runs a training cluster of hundreds of members in one process: the
// coordinator's real protocol core (coordinator/membership) and each member's real
// all-reduce ring (allreduce) over the simulated network of allreduce/memnet. A member's
// compute is modelled as a fixed time per step; its messages to the coordinator (join,
// views, commits, failure reports) cross the same modelled network. Run a Sim inside a
// testing/synctest bubble: time is then virtual, so a 256-member ring takes the simulated
// time of its messages, not the time this machine needs to move them.
package clustersim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/allreduce/memnet"
	"github.com/ncsn/ncsn/coordinator/membership"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// Config describes a simulated cluster.
type Config struct {
	// Members is the number of workers at the start.
	Members int
	// Params is the length of the gradient, in float32s.
	Params int
	// Compute is one member's time to compute its slice of a step (data, forward,
	// backward): weak scaling, every member has the same share.
	Compute time.Duration
	// Link is every link's behaviour, coordinator's included.
	Link memnet.Link
	// Codec and ChunkBytes configure the ring (zero: none, allreduce's default).
	Codec      allreduce.Codec
	ChunkBytes int
	// Steps is the run's length; MinWorkers the ring's floor (default 1).
	Steps      int64
	MinWorkers int
	// Seed drives the choice of victims.
	Seed uint64
}

// Commit is a committed step, at a simulated time since the start.
type Commit struct {
	Step    int64
	At      time.Duration
	Members int
}

// Sim is a running simulated cluster.
type Sim struct {
	cfg   Config
	net   *memnet.Net
	start time.Time
	rng   *rand.Rand

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	coord  chan func() // events for the core, run in order by the coordinator's goroutine
	core   *membership.Core
	levels int

	mu      sync.Mutex
	members map[string]*member // alive, by address
	silent  []*member          // killed silently: their rings close with the Sim
	next    int                // the next member's number
	commits []Commit
	done    chan struct{} // closed when the run is complete
	doneSet bool
}

type member struct {
	addr, id string
	ring     *allreduce.Ring
	ctx      context.Context
	kill     context.CancelFunc
	views    viewBox
}

// New starts a cluster of cfg.Members members; call it inside a synctest bubble.
func New(cfg Config) (*Sim, error) {
	if cfg.Members < 1 || cfg.Params < 1 || cfg.Steps < 1 {
		return nil, fmt.Errorf("clustersim: want members, params and steps >= 1, have %d, %d, %d", cfg.Members, cfg.Params, cfg.Steps)
	}
	cfg.MinWorkers = max(cfg.MinWorkers, 1)
	if cfg.Codec == (allreduce.Codec{}) {
		cfg.Codec = allreduce.Codec{Quant: allreduce.QuantNone}
	}
	net, err := memnet.New(memnet.Config{Seed: cfg.Seed, Link: cfg.Link})
	if err != nil {
		return nil, err
	}
	// The core checks a whole run config; what it uses is the batch, the steps and the
	// cluster section. The canonical state is a flat parameter vector with Adam and EMA.
	rc, err := config.Load("", []string{"data.name=gmm", fmt.Sprintf("run.steps=%d", cfg.Steps),
		fmt.Sprintf("run.checkpoint_every=%d", cfg.Steps), fmt.Sprintf("train.global_batch=%d", 1<<20),
		fmt.Sprintf("cluster.min_workers=%d", cfg.MinWorkers), fmt.Sprintf("cluster.hash_every=%d", cfg.Steps)})
	if err != nil {
		return nil, err
	}
	state, err := model.NewState(make([]float32, cfg.Params), rc.Train.AdamConfig, rc.Train.EMA)
	if err != nil {
		return nil, err
	}
	core, err := membership.New(membership.Config{Run: rc, Version: "sim", State: state})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sim{
		cfg: cfg, net: net, start: time.Now(), rng: rand.New(rand.NewPCG(cfg.Seed, 7)), ctx: ctx, cancel: cancel,
		coord: make(chan func(), 1024), core: core, levels: rc.Noise.Levels, members: map[string]*member{}, done: make(chan struct{}),
	}
	s.wg.Add(1)
	go s.coordinate()
	for range cfg.Members {
		if err := s.Join(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Done is closed once the run's last step is committed.
func (s *Sim) Done() <-chan struct{} { return s.done }

// Commits are the committed steps so far.
func (s *Sim) Commits() []Commit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.commits)
}

// Alive is the number of members alive.
func (s *Sim) Alive() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.members)
}

// Since is the simulated time since the start.
func (s *Sim) Since() time.Duration { return time.Since(s.start) }

// Close stops every member and the coordinator and waits for their goroutines.
func (s *Sim) Close() {
	s.cancel()
	s.mu.Lock()
	for _, m := range s.members {
		m.ring.Close()
	}
	for _, m := range s.silent {
		m.ring.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// latency is one message's time on the network: the link's latency and the time to
// serialise size bytes at its bandwidth.
func (s *Sim) latency(size int) time.Duration {
	d := s.cfg.Link.Latency
	if s.cfg.Link.Bandwidth > 0 {
		d += time.Duration(float64(size) / s.cfg.Link.Bandwidth * float64(time.Second))
	}
	return d
}

// coordinate runs the core's events in order and carries out its Ready: views go to the
// members after a network latency, commits are recorded, checkpoints are written at once.
func (s *Sim) coordinate() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case ev := <-s.coord:
			ev()
		}
		rd := s.core.Ready()
		s.mu.Lock()
		for _, c := range rd.Committed {
			s.commits = append(s.commits, Commit{Step: c.Step, At: s.Since(), Members: c.Workers})
		}
		if rd.Done && !s.doneSet {
			s.doneSet = true
			close(s.done)
		}
		var alive []*member
		for _, m := range s.members {
			alive = append(alive, m)
		}
		s.mu.Unlock()
		for _, ck := range rd.Checkpoints {
			s.core.CheckpointWritten(ck, nil) // the disk is not what is simulated
		}
		if len(rd.Checkpoints) > 0 {
			// The final checkpoint's news is a Ready of its own.
			s.send(func() {})
		}
		if len(rd.Views) > 0 {
			v := rd.Views[len(rd.Views)-1]
			d := s.latency(64 * (len(v.Members) + 1))
			for _, m := range alive {
				time.AfterFunc(d, func() { m.views.set(v) })
			}
		}
	}
}

// send queues an event for the core.
func (s *Sim) send(ev func()) {
	select {
	case s.coord <- ev:
	case <-s.ctx.Done():
	}
}

// call runs ev on the core after a request of reqBytes has crossed the network, and
// returns after the reply has come back.
func (s *Sim) call(ctx context.Context, reqBytes int, ev func()) error {
	if err := sleep(ctx, s.latency(reqBytes)); err != nil {
		return err
	}
	done := make(chan struct{})
	s.send(func() { ev(); close(done) })
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return sleep(ctx, s.latency(64))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Join starts a new member, which joins the coordinator and enters the ring at the next
// step boundary after downloading the canonical state.
func (s *Sim) Join() error {
	s.mu.Lock()
	addr := fmt.Sprintf("m%04d", s.next)
	s.next++
	s.mu.Unlock()
	ring, err := allreduce.New(allreduce.Config{
		Self: addr, Transport: allreduce.MemnetTransport(s.net, addr), ChunkBytes: s.cfg.ChunkBytes,
		Timeout: 10 * time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	ctx, kill := context.WithCancel(s.ctx)
	m := &member{addr: addr, ring: ring, ctx: ctx, kill: kill}
	m.views.init()
	s.mu.Lock()
	s.members[addr] = m
	s.mu.Unlock()
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		ring.ServeMemnet(ctx, s.net)
	}()
	go func() {
		defer s.wg.Done()
		s.run(m)
	}()
	return nil
}

// pick removes a random member from the living.
func (s *Sim) pick() *member {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cands []*member
	for _, m := range s.members {
		cands = append(cands, m)
	}
	if len(cands) == 0 {
		return nil
	}
	slices.SortFunc(cands, func(a, b *member) int { return cmpString(a.addr, b.addr) })
	m := cands[s.rng.IntN(len(cands))]
	delete(s.members, m.addr)
	return m
}

// KillSilently takes a random member off the network as a host that loses power would:
// no stream is reset, its messages and those sent to it wait forever, and only gossip
// declares it dead, after detect. It returns the member's address.
func (s *Sim) KillSilently(detect time.Duration) string {
	m := s.pick()
	if m == nil {
		return ""
	}
	s.net.Isolate(m.addr)
	m.kill()
	s.mu.Lock()
	s.silent = append(s.silent, m)
	s.mu.Unlock()
	name := m.addr
	time.AfterFunc(detect, func() { s.send(func() { s.core.NodeGone(name) }) })
	return m.addr
}

// Kill crashes a random member as kill -9 would:
// its streams are reset, so its neighbours and the coordinator's views stream see it gone
// within a network latency. It returns the member's address.
func (s *Sim) Kill() string {
	m := s.pick()
	if m == nil {
		return ""
	}
	m.kill()
	s.net.Crash(m.addr)
	m.ring.Close()
	// The coordinator's end of the dead member's views stream breaks.
	id := m.id
	time.AfterFunc(s.latency(0), func() { s.send(func() { s.core.Detach(id) }) })
	return m.addr
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// run is one member: join, then train in every view it is part of, rolling back to the
// committed step when a view changes.
func (s *Sim) run(m *member) {
	ctx := m.ctx
	var joinErr error
	if err := s.call(ctx, 256, func() {
		m.id, joinErr = s.core.Join(membership.Join{Version: "sim", Name: m.addr, RingAddr: m.addr})
		if joinErr == nil {
			joinErr = s.core.Attach(m.id)
		}
	}); err != nil || joinErr != nil {
		return
	}
	buf := make([]float32, s.cfg.Params)
	stats := make([]float32, 2*s.levels) // the loss statistics a commit carries
	var step int64 = -1                  // the replica's step; -1: no state yet
	for {
		v, changed := m.views.get()
		if v.Done {
			return
		}
		rank := slices.IndexFunc(v.Members, func(x membership.Member) bool { return x.ID == m.id })
		if rank < 0 || v.Waiting {
			if !wait(ctx, changed) {
				return
			}
			continue
		}
		if step < 0 {
			// A joiner downloads the canonical state: parameters, EMA, Adam's moments.
			if sleep(ctx, s.latency(4*4*s.cfg.Params)) != nil {
				return
			}
		}
		step = v.CommittedStep // a rollback when the replica was ahead
		addrs := make([]string, len(v.Members))
		for i, x := range v.Members {
			addrs[i] = x.RingAddr
		}
		for {
			opCtx, stop := context.WithCancel(ctx)
			go func() {
				select {
				case <-changed:
				case <-opCtx.Done():
				}
				stop()
			}()
			err := sleep(opCtx, s.cfg.Compute)
			if err == nil {
				_, err = m.ring.AllReduce(opCtx, allreduce.Op{Run: "sim", Epoch: v.Epoch, Step: uint64(step), Members: addrs, Codec: s.cfg.Codec}, buf)
			}
			if err == nil && rank == 0 {
				var cerr error
				err = s.call(opCtx, 4*s.cfg.Params, func() {
					_, cerr = s.core.Commit(membership.Commit{Worker: m.id, Epoch: v.Epoch, Step: step, Gradient: buf, LossStats: stats})
				})
				if err == nil {
					err = cerr
				}
			}
			stop()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				var pe *allreduce.PeerError
				if errors.As(err, &pe) && !closed(changed) {
					s.call(ctx, 128, func() {
						s.core.ReportFailure(membership.FailureReport{Worker: m.id, Epoch: v.Epoch, Peer: pe.Peer, Reason: pe.Error()})
					})
				}
				if !wait(ctx, changed) {
					return
				}
				break // a new view
			}
			step++
			if closed(changed) {
				break
			}
		}
	}
}

func wait(ctx context.Context, ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// viewBox holds a member's newest view; changed is closed when a newer one arrives.
type viewBox struct {
	mu      sync.Mutex
	v       membership.View
	changed chan struct{}
}

func (b *viewBox) init() {
	b.v = membership.View{Waiting: true}
	b.changed = make(chan struct{})
}

func (b *viewBox) set(v membership.View) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if v.Epoch < b.v.Epoch {
		return // views can cross on the network; the newest wins
	}
	b.v = v
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *viewBox) get() (membership.View, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.v, b.changed
}
