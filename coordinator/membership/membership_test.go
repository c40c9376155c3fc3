package membership

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// TestScripts runs the scenarios in testdata: events go in, and the test prints the
// answer to each and the effects the Core asks for. State hashes print as labels
// (h0, h1, ... in order of first sight), so a view, a checkpoint and a report that
// print the same label refer to the same canonical state. Rewrite the expected
// output with go test -run TestScripts -rewrite.
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		h := &harness{t: t}
		datadriven.RunTest(t, path, h.do)
	})
}

// nParams is the size of the scripts' toy state.
const nParams = 4

type harness struct {
	t      *testing.T
	rc     config.Config
	core   *Core
	labels map[[32]byte]string
	// pending checkpoints, oldest first; written is the newest that was written.
	pending []*Checkpoint
	written *model.State
}

func (h *harness) do(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) }
	if d.Cmd != "new" && h.core == nil {
		d.Fatalf(t, "no core: start with new")
	}
	switch d.Cmd {
	case "new":
		h.newCore(t, d)
		p("%s", h.status())
	case "restart":
		// A crash and restart: pending checkpoints are lost, the new Core goes
		// on from the newest written one (or from scratch).
		st := h.freshState(t)
		if h.written != nil {
			st = model.CopyState(nil, h.written)
		}
		h.pending = nil
		h.start(t, st)
		p("%s", h.status())
	case "join":
		j := Join{Version: "v1", Name: arg(t, d, "name", ""), LastEpoch: uint64(argInt(t, d, "last_epoch", 0))}
		j.RingAddr = arg(t, d, "addr", j.Name+":1")
		j.Version = arg(t, d, "version", j.Version)
		j.RunID = arg(t, d, "run", "")
		id, err := h.core.Join(j)
		p("%s", answer(id, err))
	case "attach":
		p("%s", answer("ok", h.core.Attach(arg(t, d, "id", ""))))
	case "detach":
		h.core.Detach(arg(t, d, "id", ""))
	case "gone":
		h.core.NodeGone(arg(t, d, "name", ""))
	case "commit":
		for range argInt(t, d, "n", 1) {
			r := h.commitRequest(t, d)
			rep, err := h.core.Commit(r)
			if err == nil {
				p("ok: step %d epoch %d", rep.Step, rep.Epoch)
			} else {
				p("%s", answer("", err))
			}
			h.effects(p)
		}
		return out.String()
	case "report-hash":
		r := HashReport{Worker: h.id(t, d), Epoch: uint64(argInt(t, d, "epoch", int64(h.core.Epoch()))), Step: argInt(t, d, "step", h.core.State().Step())}
		r.Hash = h.hashArg(t, d, r.Step)
		if h.core.ReportHash(r) {
			p("mismatch")
		} else {
			p("no mismatch")
		}
	case "report-failure":
		r := FailureReport{Worker: h.id(t, d), Epoch: uint64(argInt(t, d, "epoch", int64(h.core.Epoch()))),
			Peer: arg(t, d, "peer", ""), Reason: arg(t, d, "reason", "send: connection refused")}
		p("%s", answer("ok", h.core.ReportFailure(r)))
	case "written":
		if len(h.pending) == 0 {
			d.Fatalf(t, "no checkpoint pending")
		}
		ck := h.pending[0]
		h.pending = h.pending[1:]
		var err error
		if msg := arg(t, d, "err", ""); msg != "" {
			err = errors.New(msg)
		} else {
			h.written = model.CopyState(nil, ck.State)
		}
		p("checkpoint of step %d: %s", ck.Step, answer("written", err))
		h.core.CheckpointWritten(ck, err)
	case "stop":
		h.core.Stop()
	case "status":
		p("%s", h.status())
		return out.String()
	default:
		d.Fatalf(t, "unknown command %q", d.Cmd)
	}
	h.effects(p)
	return out.String()
}

func (h *harness) newCore(t *testing.T, d *datadriven.TestData) {
	sets := []string{"data.name=gmm", "noise.levels=2", "run.log_every=1",
		fmt.Sprintf("run.steps=%d", argInt(t, d, "steps", 20)),
		fmt.Sprintf("run.checkpoint_every=%d", argInt(t, d, "ckpt_every", 5)),
		fmt.Sprintf("train.global_batch=%d", argInt(t, d, "batch", 8)),
		fmt.Sprintf("cluster.min_workers=%d", argInt(t, d, "min", 1)),
		fmt.Sprintf("cluster.max_workers=%d", argInt(t, d, "max", 0)),
		fmt.Sprintf("cluster.hash_every=%d", argInt(t, d, "hash_every", 5)),
	}
	rc, err := config.Load("", sets)
	if err != nil {
		t.Fatal(err)
	}
	h.rc, h.labels, h.pending, h.written = rc, map[[32]byte]string{}, nil, nil
	h.start(t, h.freshState(t))
}

func (h *harness) freshState(t *testing.T) *model.State {
	params := make([]float32, nParams)
	for i := range params {
		params[i] = 0.1 * float32(i+1)
	}
	st, err := model.NewState(params, h.rc.Train.AdamConfig, h.rc.Train.EMA)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (h *harness) start(t *testing.T, st *model.State) {
	c, err := New(Config{Run: h.rc, Version: "v1", State: st})
	if err != nil {
		t.Fatal(err)
	}
	h.core = c
}

// gradient is the scripts' gradient sum of a step; the same at every replica.
func gradient(step int64, batch int) []float32 {
	g := make([]float32, nParams)
	for i := range g {
		g[i] = float32(batch) * float32(i+1) * float32(1+step%3) * 0.01
	}
	return g
}

// lossStats: levels 0 and 1 with mean losses 1.5 and 0.5 over 2 samples each.
var lossStats = []float32{3, 1, 2, 2}

func (h *harness) commitRequest(t *testing.T, d *datadriven.TestData) Commit {
	step := argInt(t, d, "step", h.core.State().Step())
	r := Commit{
		Worker: h.id(t, d), Epoch: uint64(argInt(t, d, "epoch", int64(h.core.Epoch()))), Step: step,
		Gradient: gradient(step, h.rc.Train.GlobalBatch), LossStats: lossStats,
	}
	switch arg(t, d, "grad", "") {
	case "":
	case "short":
		r.Gradient = r.Gradient[1:]
	case "nan":
		r.Gradient[0] = float32(math.NaN())
	default:
		d.Fatalf(t, "grad: short or nan")
	}
	if arg(t, d, "stats", "") == "short" {
		r.LossStats = lossStats[1:]
	}
	if d.HasArg("hash") {
		h := h.hashArg(t, d, step+1)
		r.StateHash = h[:]
	}
	return r
}

// id is the id argument, by default rank 0 of the current view.
func (h *harness) id(t *testing.T, d *datadriven.TestData) string {
	def := ""
	if v := h.core.View(); len(v.Members) > 0 {
		def = v.Members[0].ID
	}
	return arg(t, d, "id", def)
}

// hashArg is the hash argument: ok is the hash a faithful replica has after
// step (computed by replaying the scripts' gradients from the canonical state
// when step is ahead of it), bad is a hash no state has.
func (h *harness) hashArg(t *testing.T, d *datadriven.TestData, step int64) [32]byte {
	switch v := arg(t, d, "hash", "ok"); v {
	case "ok":
		st := model.CopyState(nil, h.core.State())
		if step < st.Step() {
			d.Fatalf(t, "hash=ok of step %d: the canonical state is at %d", step, st.Step())
		}
		for st.Step() < step {
			if _, err := st.Apply(gradient(st.Step(), h.rc.Train.GlobalBatch), h.rc.Train.GlobalBatch); err != nil {
				t.Fatal(err)
			}
		}
		return st.Hash()
	case "bad":
		var b [32]byte
		for i := range b {
			b[i] = 0xff
		}
		return b
	default:
		d.Fatalf(t, "hash=%s: ok or bad", v)
		return [32]byte{}
	}
}

func (h *harness) label(x [32]byte) string {
	if l, ok := h.labels[x]; ok {
		return l
	}
	l := fmt.Sprintf("h%d", len(h.labels))
	h.labels[x] = l
	return l
}

func (h *harness) view(v View) string {
	var b strings.Builder
	fmt.Fprintf(&b, "view e%d [", v.Epoch)
	for i, m := range v.Members {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(m.ID)
	}
	fmt.Fprintf(&b, "] step=%d", v.CommittedStep)
	if !v.Done {
		fmt.Fprintf(&b, " hash=%s", h.label(v.StateHash))
	}
	if v.Waiting {
		b.WriteString(" waiting")
	}
	if v.Done {
		b.WriteString(" done")
	}
	if v.Reason != "" {
		fmt.Fprintf(&b, " (%s)", v.Reason)
	}
	return b.String()
}

func (h *harness) effects(p func(string, ...any)) {
	r := h.core.Ready()
	for _, rm := range r.Removed {
		where := "not in ring"
		if rm.InRing {
			where = "in ring"
		}
		p("removed %s (%s): %s", rm.ID, where, rm.Reason)
	}
	for _, c := range r.Committed {
		p("committed step=%d loss=%g per_level=%v workers=%d epoch=%d", c.Step, c.Loss, c.PerLevel, c.Workers, c.Epoch)
	}
	for _, rs := range r.Resyncs {
		p("resync %s at step %d", rs.Worker, rs.Step)
	}
	for _, v := range r.Views {
		p("%s", h.view(v))
	}
	for _, ck := range r.Checkpoints {
		final := ""
		if ck.Final {
			final = " final"
		}
		if ck.State == h.core.State() {
			h.t.Fatal("a checkpoint shares the canonical state's buffers")
		}
		p("checkpoint step=%d hash=%s%s", ck.Step, h.label(ck.State.Hash()), final)
		h.pending = append(h.pending, ck)
	}
	if r.Done {
		p("done")
	}
	if r.Failed != nil {
		p("failed: %v", r.Failed)
	}
}

func (h *harness) status() string {
	s := h.core.Status()
	var ids []string
	for _, m := range s.Members {
		ids = append(ids, m.ID)
	}
	return fmt.Sprintf("status: step %d of %d (from %d, %d commits) epoch %d members %v waiting=%v done=%v hash=%s",
		s.Step, s.Total, s.FirstStep, s.Commits, s.Epoch, ids, s.Waiting, s.Done, h.label(h.core.Hash()))
}

func answer(ok string, err error) string {
	if err != nil {
		if r := ReasonOf(err); r != 0 {
			return fmt.Sprintf("refused (%s): %v", r, err)
		}
		return "error: " + err.Error()
	}
	return ok
}

func arg(t *testing.T, d *datadriven.TestData, key, def string) string {
	if !d.HasArg(key) {
		return def
	}
	var v string
	d.ScanArgs(t, key, &v)
	if v == "-" {
		return ""
	}
	return v
}

func argInt(t *testing.T, d *datadriven.TestData, key string, def int64) int64 {
	if !d.HasArg(key) {
		return def
	}
	var v int64
	d.ScanArgs(t, key, &v)
	return v
}
