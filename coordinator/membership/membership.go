// Package membership is the coordinator's protocol core, in the style of etcd's
// raft.RawNode: which workers are in the ring, at which epoch, which step is
// committed, and the canonical state the commits build.
//
// A Core does no I/O, starts no goroutines and reads no clock. Its shell (package
// coordinator) feeds it events — a join, a views stream opening or closing, a node
// that gossip declares gone, a commit, a hash or failure report, the result of a
// checkpoint write — and answers each call with what the Core returns. What the
// shell must carry out besides (publish a view, end a removed worker's stream,
// write a checkpoint, report progress, end the run) accumulates until the shell
// takes it with Ready. The shell serialises all calls.
//
// The protocol has no timers: deaths are reported by gossip, by views streams
// that end and by ring members, so there is no Tick.
package membership

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// Config configures a Core.
type Config struct {
	// Run supplies run.id, run.steps, run.checkpoint_every, train.global_batch,
	// noise.levels and the cluster section.
	Run config.Config
	// Version must equal a joining worker's.
	Version string
	// State is the canonical state to go on from, fresh or restored from a
	// checkpoint; the Core owns it from now on.
	State *model.State
}

// Reason says why the Core refused an event.
type Reason int

// Reasons of refusals.
const (
	RefusedVersion Reason = iota + 1 // the worker runs another build
	RefusedRun                       // the worker asks for another run
	BadRequest                       // the request is malformed
	RunComplete                      // the last step is committed
	RunFull                          // no room for another worker
	UnknownWorker                    // no such joined worker (or its stream is already open)
	StaleEpoch                       // the request is of an older view
	NotRank0                         // only rank 0 commits
	WrongStep                        // a commit of a step after the committed one
	Waiting                          // the ring waits for cluster.min_workers
	RunFailed                        // the run has failed (its final checkpoint could not be written)
	ApplyFailed                      // the update could not be applied (the state is unchanged)
	Stopping                         // the coordinator is stopping
)

var reasonNames = map[Reason]string{
	RefusedVersion: "version", RefusedRun: "run", BadRequest: "bad-request", RunComplete: "complete",
	RunFull: "full", UnknownWorker: "unknown-worker", StaleEpoch: "stale-epoch", NotRank0: "not-rank-0",
	WrongStep: "wrong-step", Waiting: "waiting", RunFailed: "failed", ApplyFailed: "apply-failed",
	Stopping: "stopping",
}

func (r Reason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Refusal is the error of a refused event; its message is for the worker's user.
type Refusal struct {
	Reason Reason
	msg    string
}

func (r *Refusal) Error() string { return r.msg }

func refuse(r Reason, format string, args ...any) error {
	return &Refusal{Reason: r, msg: fmt.Sprintf(format, args...)}
}

// ReasonOf is the reason of a refusal, 0 for any other error.
func ReasonOf(err error) Reason {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return 0
}

// Member is a ring member.
type Member struct {
	ID, RingAddr string
}

// View is a ring view: the members in rank order and the committed step they
// start from, with the canonical state's hash at that step.
type View struct {
	Epoch         uint64
	Members       []Member
	CommittedStep int64
	StateHash     [32]byte
	// Waiting: fewer members than cluster.min_workers, so nobody trains.
	Waiting bool
	// Done: the run is complete; the last view.
	Done bool
	// Reason says why the view was issued, for logs.
	Reason string
}

// Removal is a worker the Core dropped: its views stream ends with Reason.
type Removal struct {
	ID, Reason string
	InRing     bool
}

// Committed describes a step the Core applied.
type Committed struct {
	Step     int64 // the committed step after the commit: updates applied
	Loss     float64
	PerLevel []float64
	Workers  int
	Epoch    uint64
}

// Resync is a replica whose state hash differed from the canonical state's.
type Resync struct {
	Worker string
	Step   int64
}

// Checkpoint is a checkpoint to write: a copy of the canonical state at Step,
// which the shell hands back with CheckpointWritten.
type Checkpoint struct {
	Step  int64
	State *model.State
	// Final: the checkpoint of the last step; the run is complete once it is
	// written, and has failed if it cannot be.
	Final bool
}

// Ready is what the shell must carry out, accumulated since the last Ready.
type Ready struct {
	// Views issued, oldest first; the last is the one to publish.
	Views []View
	// Removed workers, whose views streams end.
	Removed []Removal
	// Committed steps, oldest first.
	Committed []Committed
	// Resyncs are replicas found diverged (each also issued a view).
	Resyncs []Resync
	// Checkpoints to write, oldest first.
	Checkpoints []*Checkpoint
	// Done: the final checkpoint is written and the run complete.
	Done bool
	// Failed is set when the run has failed; the shell stops.
	Failed error
}

type phase int

const (
	running   phase = iota
	finishing       // the last step is applied; its checkpoint is being written
	done
	failed
	stopped // the shell is stopping: nothing more is committed
)

type worker struct {
	seq                int // join order
	id, name, ringAddr string
	lastEpoch          uint64
	streaming          bool
	removed            string // why, once removed
}

type hashReport struct {
	worker string
	hash   [32]byte
}

// Core is the coordinator's protocol state. It is not safe for concurrent use.
type Core struct {
	cfg   Config
	total int64
	batch int
	state *model.State
	stats model.LossStats
	spare *model.State // a written checkpoint's copy, reused for the next

	phase   phase
	epoch   uint64
	view    View
	members []*worker // the view's, in rank order
	workers map[string]*worker
	seq     int
	admit   bool // streaming joiners wait for the next step boundary

	hashCache struct {
		step int64
		hash [32]byte
		ok   bool
	}
	hashes  map[int64][32]byte // canonical hashes at recent report steps
	reports map[int64][]hashReport

	firstStep int64
	ckptStep  int64 // the step of the newest checkpoint asked for (or resumed from)
	committed []int64
	loss      float64

	ready Ready
}

// New returns a Core going on from cfg.State.
func New(cfg Config) (*Core, error) {
	if cfg.State == nil {
		return nil, errors.New("membership: Config.State is nil")
	}
	if cfg.Version == "" {
		return nil, errors.New("membership: Config.Version is empty")
	}
	if err := cfg.Run.Validate(); err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	c := &Core{
		cfg: cfg, total: cfg.Run.Run.Steps, batch: cfg.Run.Train.GlobalBatch, state: cfg.State,
		stats:   model.NewLossStats(cfg.Run.Noise.Levels),
		workers: map[string]*worker{}, hashes: map[int64][32]byte{}, reports: map[int64][]hashReport{},
		firstStep: cfg.State.Step(), ckptStep: cfg.State.Step(),
	}
	c.view = View{CommittedStep: c.state.Step(), Waiting: true}
	if c.state.Step() >= c.total {
		c.phase = done
		c.view = View{CommittedStep: c.state.Step(), Done: true}
	}
	return c, nil
}

// Ready takes what the shell must carry out.
func (c *Core) Ready() Ready {
	r := c.ready
	c.ready = Ready{}
	return r
}

// Join is a worker's request to join.
type Join struct {
	Version, RunID, Name, RingAddr string
	// LastEpoch is the newest epoch the worker has seen (of any coordinator):
	// epochs never go back for it, even across a coordinator restart.
	LastEpoch uint64
}

// Join admits a worker and returns its id; it enters the ring once its views
// stream is attached.
func (c *Core) Join(j Join) (string, error) {
	rc := c.cfg.Run
	switch {
	case j.Version != c.cfg.Version:
		return "", refuse(RefusedVersion, "version mismatch: worker is %q, coordinator is %q; run the same ncsn build everywhere", j.Version, c.cfg.Version)
	case j.RunID != "" && j.RunID != rc.Run.ID:
		return "", refuse(RefusedRun, "wrong run: worker asks for run %q, this coordinator runs %q", j.RunID, rc.Run.ID)
	case j.RingAddr == "" || j.Name == "":
		return "", refuse(BadRequest, "join needs the worker's name and ring address")
	case c.phase == done:
		return "", refuse(RunComplete, "the run is complete")
	case c.phase == failed:
		return "", refuse(RunFailed, "the run failed; wait for the coordinator to restart")
	}
	for _, w := range c.sortedWorkers() {
		if w.ringAddr == j.RingAddr {
			// The same address again: a restarted worker whose old self is not gone yet.
			c.remove(w, "replaced by a new worker at the same address")
		}
	}
	limit := rc.Train.GlobalBatch
	if rc.Cluster.MaxWorkers > 0 {
		limit = min(limit, rc.Cluster.MaxWorkers)
	}
	if len(c.workers) >= limit {
		return "", refuse(RunFull, "run full: %d workers (max %d for cluster.max_workers / train.global_batch)", len(c.workers), limit)
	}
	c.seq++
	w := &worker{seq: c.seq, id: fmt.Sprintf("w%d-%s", c.seq, j.Name), name: j.Name, ringAddr: j.RingAddr, lastEpoch: j.LastEpoch}
	c.workers[w.id] = w
	return w.id, nil
}

// Attach records that a joined worker's views stream is open: it enters the
// ring at once if no ring is training, else at the next step boundary.
func (c *Core) Attach(id string) error {
	w := c.workers[id]
	if w == nil || w.streaming {
		return refuse(UnknownWorker, "unknown worker %q: join first", id)
	}
	w.streaming = true
	if c.training() {
		c.admit = true
		return nil
	}
	c.newView("admit")
	return nil
}

// Detach records that a worker's views stream ended: the worker is removed.
func (c *Core) Detach(id string) {
	if w := c.workers[id]; w != nil {
		c.remove(w, "views stream ended")
	}
}

// NodeGone records that gossip found the node of that name left or dead.
func (c *Core) NodeGone(name string) {
	for _, w := range c.sortedWorkers() {
		if w.name == name {
			c.remove(w, "gossip: node left or died")
		}
	}
}

// Commit is rank 0's reduced gradient of a step.
type Commit struct {
	Worker string
	Epoch  uint64
	Step   int64 // the committed step the gradient was computed at
	// Gradient is the SUM over the global batch; Commit scales it in place.
	Gradient  []float32
	LossStats []float32 // model.LossStats in flat form
	// StateHash, if set, is rank 0's state hash after applying the step.
	StateHash []byte
}

// CommitReply answers a commit: the committed step and the current epoch (a
// newer epoch than the commit's tells rank 0 that a new view follows).
type CommitReply struct {
	Step  int64
	Epoch uint64
}

// Commit applies rank 0's gradient of the next step to the canonical state.
// A commit of a step already applied in this epoch (a retry) is acknowledged.
func (c *Core) Commit(r Commit) (CommitReply, error) {
	switch c.phase {
	case finishing, done:
		return CommitReply{}, refuse(RunComplete, "the run is complete")
	case failed:
		return CommitReply{}, refuse(RunFailed, "the run failed")
	case stopped:
		return CommitReply{}, refuse(Stopping, "the coordinator is stopping")
	}
	if r.Epoch != c.epoch {
		return CommitReply{}, refuse(StaleEpoch, "stale epoch %d: the ring is at epoch %d", r.Epoch, c.epoch)
	}
	if len(c.members) == 0 || c.members[0].id != r.Worker {
		return CommitReply{}, refuse(NotRank0, "worker %q is not rank 0 of epoch %d", r.Worker, c.epoch)
	}
	if c.view.Waiting {
		return CommitReply{}, refuse(Waiting, "epoch %d waits for %d workers (cluster.min_workers): nobody trains", c.epoch, c.cfg.Run.Cluster.MinWorkers)
	}
	step := c.state.Step()
	switch {
	case r.Step < step:
		return CommitReply{Step: step, Epoch: c.epoch}, nil
	case r.Step > step:
		return CommitReply{}, refuse(WrongStep, "commit of step %d, but the committed step is %d", r.Step, step)
	}
	if len(r.Gradient) != len(c.state.Params) {
		return CommitReply{}, refuse(BadRequest, "gradient: %d values, want %d", len(r.Gradient), len(c.state.Params))
	}
	if err := c.stats.Get(r.LossStats); err != nil {
		return CommitReply{}, refuse(BadRequest, "loss stats: %v", err)
	}
	if _, err := c.state.Apply(r.Gradient, c.batch); err != nil {
		return CommitReply{}, refuse(ApplyFailed, "apply step %d: %v", step, err)
	}
	now := c.state.Step()
	c.committed = append(c.committed, step)
	c.loss = c.stats.Mean()
	c.ready.Committed = append(c.ready.Committed, Committed{
		Step: now, Loss: c.loss, PerLevel: c.stats.PerLevel(), Workers: len(c.members), Epoch: c.epoch,
	})
	if every := c.cfg.Run.Cluster.HashEvery; now%every == 0 {
		h := c.Hash()
		c.hashes[now] = h
		delete(c.hashes, now-3*every)
		if len(r.StateHash) > 0 && !bytes.Equal(r.StateHash, h[:]) {
			c.resync(r.Worker, now)
		}
		for _, rep := range c.reports[now] {
			if rep.hash != h {
				c.resync(rep.worker, now)
			}
		}
		delete(c.reports, now)
	}
	final := now == c.total
	if now%c.cfg.Run.Run.CheckpointEvery == 0 || final {
		c.ready.Checkpoints = append(c.ready.Checkpoints, &Checkpoint{Step: now, State: model.CopyState(c.spare, c.state), Final: final})
		c.ckptStep = now
		c.spare = nil
	}
	if final {
		// Done once the final checkpoint is written: a run whose last
		// checkpoint is lost has not ended.
		c.phase = finishing
	} else if c.admit {
		c.newView("admit at step boundary")
	}
	return CommitReply{Step: now, Epoch: c.epoch}, nil
}

// HashReport is a replica's state hash after a step.
type HashReport struct {
	Worker string
	Epoch  uint64
	Step   int64
	Hash   [32]byte
}

// ReportHash checks a replica's hash against the canonical state's at that
// step (at once, or when the step is committed) and tells whether it differed;
// a difference issues a view in which the replica resynchronises.
func (c *Core) ReportHash(r HashReport) bool {
	if r.Epoch != c.epoch || c.workers[r.Worker] == nil {
		return false // stale: the view change resynchronises anyway
	}
	step := c.state.Step()
	if r.Step > step {
		c.reports[r.Step] = append(c.reports[r.Step], hashReport{r.Worker, r.Hash})
		return false
	}
	want, ok := c.hashes[r.Step]
	if r.Step == step {
		want, ok = c.Hash(), true
	}
	if ok && want != r.Hash {
		c.resync(r.Worker, r.Step)
		return true
	}
	return false
}

// FailureReport names the ring neighbour a member blames for a failed all-reduce.
type FailureReport struct {
	Worker       string
	Epoch        uint64
	Peer, Reason string // the neighbour's ring address; what failed
}

// ReportFailure removes the neighbour a ring member blames for a failed
// all-reduce (a report of an older epoch is already handled by a newer view).
func (c *Core) ReportFailure(r FailureReport) error {
	if r.Epoch != c.epoch {
		return nil
	}
	reporter := c.workers[r.Worker]
	if reporter == nil {
		return refuse(UnknownWorker, "unknown worker %q", r.Worker)
	}
	for _, m := range c.members {
		if m.ringAddr == r.Peer && m != reporter {
			c.remove(m, "reported by "+reporter.id+": "+r.Reason)
			return nil
		}
	}
	return nil
}

// CheckpointWritten hands back a checkpoint of Ready with the result of
// writing it. Only the final one matters to the protocol: written, the run is
// complete; lost, the run has failed.
func (c *Core) CheckpointWritten(ck *Checkpoint, err error) {
	if c.spare == nil {
		c.spare = ck.State
	}
	if c.phase == stopped && err != nil && ck.Step == c.state.Step() {
		// The stop promised this step to the next start; without it a restart would
		// quietly go back to an older checkpoint.
		c.fail(fmt.Errorf("checkpoint of step %d at stop: %w", ck.Step, err))
		return
	}
	if !ck.Final || c.phase != finishing {
		return
	}
	if err != nil {
		c.fail(fmt.Errorf("final checkpoint: %w", err))
		return
	}
	c.phase = done
	c.view = View{Epoch: c.epoch + 1, CommittedStep: c.state.Step(), Done: true, Reason: "run complete"}
	c.ready.Views = append(c.ready.Views, c.view)
	c.ready.Done = true
}

// Stop is the shell's graceful stop (SIGINT, SIGTERM, an eviction): nothing is
// committed after it, and the committed state is checkpointed unless a checkpoint of
// its step was already asked for, so a stop loses no committed step.
func (c *Core) Stop() {
	if c.phase != running {
		return
	}
	c.phase = stopped
	if step := c.state.Step(); step > c.ckptStep {
		c.ready.Checkpoints = append(c.ready.Checkpoints, &Checkpoint{Step: step, State: model.CopyState(c.spare, c.state)})
		c.spare = nil
		c.ckptStep = step
	}
}

func (c *Core) fail(err error) {
	c.phase = failed
	c.ready.Failed = err
}

// training tells whether a ring is running steps (so joiners wait for a step boundary).
func (c *Core) training() bool {
	return c.phase == running && len(c.members) >= c.cfg.Run.Cluster.MinWorkers
}

// remove drops a worker; if it was in the ring, a new view follows at once.
func (c *Core) remove(w *worker, why string) {
	if w.removed != "" {
		return
	}
	w.removed = why
	delete(c.workers, w.id)
	inRing := slices.Contains(c.members, w)
	c.ready.Removed = append(c.ready.Removed, Removal{ID: w.id, Reason: why, InRing: inRing})
	if inRing {
		c.newView("remove " + w.id + ": " + why)
	}
}

func (c *Core) resync(worker string, step int64) {
	c.ready.Resyncs = append(c.ready.Resyncs, Resync{Worker: worker, Step: step})
	c.newView("resync " + worker)
}

// newView issues the next view: the ring members that remain, then every
// streaming joiner in join order, at the committed step.
func (c *Core) newView(reason string) {
	if c.phase != running {
		return
	}
	var members []*worker
	for _, m := range c.members {
		if m.removed == "" {
			members = append(members, m)
		}
	}
	for _, w := range c.sortedWorkers() {
		if w.streaming && !slices.Contains(members, w) {
			members = append(members, w)
		}
	}
	epoch := c.epoch + 1
	for _, m := range members {
		epoch = max(epoch, m.lastEpoch+1)
	}
	c.epoch, c.members, c.admit = epoch, members, false
	v := View{Epoch: epoch, CommittedStep: c.state.Step(), StateHash: c.Hash(),
		Waiting: len(members) < c.cfg.Run.Cluster.MinWorkers, Reason: reason}
	for _, m := range members {
		v.Members = append(v.Members, Member{ID: m.id, RingAddr: m.ringAddr})
	}
	c.view = v
	c.ready.Views = append(c.ready.Views, v)
}

func (c *Core) sortedWorkers() []*worker {
	ws := make([]*worker, 0, len(c.workers))
	for _, w := range c.workers {
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b *worker) int { return cmp.Compare(a.seq, b.seq) })
	return ws
}

// Hash is the canonical state's hash, cached per step.
func (c *Core) Hash() [32]byte {
	st := c.state.Step()
	if !c.hashCache.ok || c.hashCache.step != st {
		c.hashCache.step, c.hashCache.hash, c.hashCache.ok = st, c.state.Hash(), true
	}
	return c.hashCache.hash
}

// Joined tells whether id is a joined worker that was not removed.
func (c *Core) Joined(id string) bool { return c.workers[id] != nil }

// State is the canonical state; the caller reads it under the shell's lock and
// never changes it.
func (c *Core) State() *model.State { return c.state }

// View is the current view.
func (c *Core) View() View { return c.view }

// Epoch is the current epoch.
func (c *Core) Epoch() uint64 { return c.epoch }

// Committed is the sequence of steps this Core applied, in order.
func (c *Core) Committed() []int64 { return slices.Clone(c.committed) }

// Status describes the run.
type Status struct {
	Step, Total, FirstStep int64
	Epoch                  uint64
	Done, Waiting          bool
	Loss                   float64
	Commits                int64
	Members                []Member
}

// Status describes the run.
func (c *Core) Status() Status {
	s := Status{
		Step: c.state.Step(), Total: c.total, FirstStep: c.firstStep, Epoch: c.epoch,
		Done: c.phase == done, Waiting: c.view.Waiting, Loss: c.loss, Commits: int64(len(c.committed)),
	}
	for _, m := range c.members {
		if m.removed == "" {
			s.Members = append(s.Members, Member{ID: m.id, RingAddr: m.ringAddr})
		}
	}
	return s
}
