package worker

import (
	"testing"

	"github.com/ncsn/ncsn/proto/coordpb"
)

// TestTransitionTable checks every (phase, outcome) pair against the intended table: the
// allowed moves, and that every other pair is refused rather than silently taken.
func TestTransitionTable(t *testing.T) {
	allowed := map[Phase]map[Outcome]Phase{
		Joining:   {Admitted: Waiting, Refused: Failed, Unreachable: Failed, RunComplete: Done, Cancelled: Stopped, Fault: Failed},
		Rejoining: {Admitted: Waiting, Refused: Failed, Unreachable: Failed, RunComplete: Done, Cancelled: Stopped, Fault: Failed},
		Waiting: {ViewReady: Syncing, ViewIdle: Waiting, RunComplete: Done, CoordinatorLost: Rejoining,
			Cancelled: Stopped, Fault: Failed},
		Syncing: {InSync: Training, RolledBack: Training, Downloaded: Training, SyncFailed: Waiting, ViewChanged: Waiting,
			CoordinatorLost: Rejoining, Cancelled: Stopped, Fault: Failed},
		Training: {Stepped: Training, LastStep: Waiting, ViewChanged: Waiting, PeerFailed: Waiting, RingFailed: Waiting,
			CommitRefused: Waiting, CoordinatorLost: Rejoining, Cancelled: Stopped, Fault: Failed},
		Done: {}, Stopped: {}, Failed: {},
	}
	for p := Joining; p <= Failed; p++ {
		for o := Admitted; o <= Fault; o++ {
			want, ok := allowed[p][o]
			got, gotOK := next(p, o)
			if gotOK != ok || (ok && got != want) {
				t.Errorf("next(%v, %v) = %v, %v; want %v, %v", p, o, got, gotOK, want, ok)
			}
		}
	}
	if _, ok := next(Training, 0); ok {
		t.Error("the zero outcome moved the machine")
	}
}

func TestNames(t *testing.T) {
	seen := map[string]bool{}
	for p := Joining; p <= Failed; p++ {
		seen[p.String()] = true
	}
	for o := Admitted; o <= Fault; o++ {
		seen[o.String()] = true
	}
	if want := int(Failed) + 1 + int(Fault); len(seen) != want {
		t.Errorf("%d distinct names for %d phases and outcomes", len(seen), want)
	}
	if Phase(99).String() != "phase(99)" || Outcome(99).String() != "outcome(99)" {
		t.Error("unknown values are not named as such")
	}
}

func view(epoch uint64, ids ...string) *coordpb.View {
	v := &coordpb.View{Epoch: epoch}
	for _, id := range ids {
		v.Members = append(v.Members, &coordpb.Member{WorkerId: id, RingAddr: id + ":1"})
	}
	return v
}

func TestClassify(t *testing.T) {
	waiting := view(3, "a", "b")
	waiting.Waiting = true
	for _, tc := range []struct {
		name string
		v    *coordpb.View
		want Outcome
		rank int
	}{
		{"listed", view(3, "a", "b"), ViewReady, 1},
		{"first", view(3, "b", "a"), ViewReady, 0},
		{"not listed", view(3, "a", "c"), ViewIdle, -1},
		{"below min_workers", waiting, ViewIdle, 1},
		{"done", &coordpb.View{Epoch: 4, Done: true}, RunComplete, -1},
	} {
		if o, rank := classify(tc.v, "b"); o != tc.want || rank != tc.rank {
			t.Errorf("%s: classify = %v, %d; want %v, %d", tc.name, o, rank, tc.want, tc.rank)
		}
	}
}

func TestViewOrder(t *testing.T) {
	done := &coordpb.View{Epoch: 2, Done: true}
	for _, tc := range []struct {
		name     string
		v, cur   *coordpb.View
		replaces bool
	}{
		{"first", view(1), nil, true},
		{"newer", view(5), view(4), true},
		{"same epoch", view(4), view(4), false},
		{"older (stale)", view(3), view(4), false},
		{"done, even with an older epoch", done, view(4), true},
	} {
		if got := supersedes(tc.v, tc.cur); got != tc.replaces {
			t.Errorf("%s: supersedes = %v", tc.name, got)
		}
	}
	for _, tc := range []struct {
		name  string
		v     *coordpb.View
		acted uint64
		fresh bool
	}{
		{"none", nil, 0, false},
		{"newer", view(5), 4, true},
		{"acted on", view(4), 4, false},
		{"stale coordinator", view(2), 4, false},
		{"done", done, 4, true},
	} {
		if got := fresh(tc.v, tc.acted); got != tc.fresh {
			t.Errorf("%s: fresh = %v", tc.name, got)
		}
	}
}

func TestPlanSync(t *testing.T) {
	id := func(step int64, b byte) stateID { return stateID{step: step, hash: [32]byte{b}} }
	for _, tc := range []struct {
		name             string
		want, have, undo stateID
		held             bool
		plan             syncPlan
	}{
		{"same state", id(5, 1), id(5, 1), id(4, 2), true, keep},
		{"one step ahead", id(5, 1), id(6, 3), id(5, 1), true, rollBack},
		{"one step ahead, nothing to undo", id(5, 1), id(6, 3), id(5, 1), false, download},
		{"diverged at the same step", id(5, 1), id(5, 9), id(4, 2), true, download},
		{"undo diverged too", id(5, 1), id(6, 3), id(5, 8), true, download},
		{"behind", id(9, 1), id(5, 1), id(4, 1), true, download},
	} {
		if got := planSync(tc.want, tc.have, tc.undo, tc.held); got != tc.plan {
			t.Errorf("%s: plan %d, want %d", tc.name, got, tc.plan)
		}
	}
}
