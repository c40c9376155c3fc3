package worker

import (
	"fmt"

	"github.com/ncsn/ncsn/proto/coordpb"
)

// This file is the distributed worker's state machine without its effects: the phases, the
// outcomes that end a phase's work, and the decisions that depend on views and hashes alone.
// Cluster.Run carries out each phase's work and moves by next.

// Phase is a state of a distributed worker.
type Phase uint8

const (
	// Joining: calling Join until the coordinator admits the worker, refuses it, says the
	// run is complete, or JoinTimeout passes.
	Joining Phase = iota
	// Waiting: admitted and following the views stream, for a view newer than every view
	// acted on.
	Waiting
	// Syncing: making the replica equal to the view's canonical state: keep it, undo its
	// uncommitted step, or download the state.
	Syncing
	// Training: running the view's steps.
	Training
	// Rejoining: the coordinator was lost; Join again within RejoinTimeout.
	Rejoining
	// Done: the run is complete. Terminal; Run returns nil.
	Done
	// Stopped: ctx ended, or Close or Kill was called. Terminal; Run returns ctx's error.
	Stopped
	// Failed: refused, unreachable, or a local error. Terminal; Run returns the error.
	Failed
)

var phaseNames = [...]string{"joining", "waiting", "syncing", "training", "rejoining", "done", "stopped", "failed"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", p)
}

func (p Phase) terminal() bool { return p >= Done }

// Outcome is how a phase's work ended; with the phase it decides the next phase.
type Outcome uint8

const (
	// Admitted: Join succeeded.
	Admitted Outcome = iota + 1
	// Refused: Join refused (wrong secret, version or run id, run full, bad request).
	Refused
	// Unreachable: no answer to Join within the join timeout.
	Unreachable
	// RunComplete: Join answered that the run is complete, or a view says so.
	RunComplete
	// ViewReady: a newer view lists this worker in a training ring.
	ViewReady
	// ViewIdle: a newer view does not list this worker, or has fewer than min_workers.
	ViewIdle
	// InSync: the replica already holds the view's state.
	InSync
	// RolledBack: the replica undid its uncommitted step to reach the view's state.
	RolledBack
	// Downloaded: the replica downloaded the view's state from the coordinator.
	Downloaded
	// SyncFailed: the download failed, or brought another step's state.
	SyncFailed
	// Stepped: a step was applied to the replica (and committed, by rank 0).
	Stepped
	// LastStep: the replica holds run.steps steps; the done view follows.
	LastStep
	// ViewChanged: a newer view arrived before a step, during its all-reduce, or with the
	// answer to its commit.
	ViewChanged
	// PeerFailed: the all-reduce failed on a neighbour, which was reported.
	PeerFailed
	// RingFailed: the all-reduce failed without a neighbour to blame (its deadline).
	RingFailed
	// CommitRefused: the coordinator refused the commit (stale epoch, not the next step).
	CommitRefused
	// CoordinatorLost: the views stream ended without the run being complete.
	CoordinatorLost
	// Cancelled: ctx ended, or Close or Kill was called.
	Cancelled
	// Fault: a local error (computing or applying a step, building the replica, a changed
	// run config); the worker cannot go on.
	Fault
)

var outcomeNames = [...]string{"", "admitted", "refused", "unreachable", "run-complete", "view-ready", "view-idle",
	"in-sync", "rolled-back", "downloaded", "sync-failed", "stepped", "last-step", "view-changed",
	"peer-failed", "ring-failed", "commit-refused", "coordinator-lost", "cancelled", "fault"}

func (o Outcome) String() string {
	if o > 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// next is the transition table. ok is false for an outcome the phase cannot have.
func next(p Phase, o Outcome) (to Phase, ok bool) {
	if p.terminal() {
		return p, false
	}
	switch o {
	case Cancelled:
		return Stopped, true
	case Fault:
		return Failed, true
	}
	switch p {
	case Joining, Rejoining:
		switch o {
		case Admitted:
			return Waiting, true
		case Refused, Unreachable:
			return Failed, true
		case RunComplete:
			return Done, true
		}
	case Waiting:
		switch o {
		case ViewReady:
			return Syncing, true
		case ViewIdle:
			return Waiting, true
		case RunComplete:
			return Done, true
		case CoordinatorLost:
			return Rejoining, true
		}
	case Syncing:
		switch o {
		case InSync, RolledBack, Downloaded:
			return Training, true
		case SyncFailed, ViewChanged:
			return Waiting, true
		case CoordinatorLost:
			return Rejoining, true
		}
	case Training:
		switch o {
		case Stepped:
			return Training, true
		case LastStep, ViewChanged, PeerFailed, RingFailed, CommitRefused:
			return Waiting, true
		case CoordinatorLost:
			return Rejoining, true
		}
	}
	return p, false
}

// Transition is one move of the state machine, reported to ClusterConfig.OnTransition.
type Transition struct {
	From, To Phase
	Outcome  Outcome
	// Epoch is the view the worker follows (0 before the first), Step the replica's step.
	Epoch uint64
	Step  int64
	// Err says why, for outcomes that have a reason (refusals, failures, a lost coordinator).
	Err error
}

// supersedes tells whether the views stream's v replaces cur, the newest view received:
// epochs only grow within a stream, so an older view is stale and dropped, whereas the done
// view always counts.
func supersedes(v, cur *coordpb.View) bool {
	return cur == nil || v.Done || v.Epoch > cur.Epoch
}

// fresh tells whether a Waiting worker acts on v, having acted on views up to epoch acted. A
// coordinator lists a (re-)joined worker only in views newer than the epoch it joined with,
// so an older view listing it is a stale coordinator's and is ignored.
func fresh(v *coordpb.View, acted uint64) bool {
	return v != nil && (v.Done || v.Epoch > acted)
}

// classify is what view v means for worker id: RunComplete, ViewIdle, or ViewReady with
// the worker's rank.
func classify(v *coordpb.View, id string) (Outcome, int) {
	if v.Done {
		return RunComplete, -1
	}
	for i, m := range v.Members {
		if m.WorkerId == id {
			if v.Waiting {
				return ViewIdle, i
			}
			return ViewReady, i
		}
	}
	return ViewIdle, -1
}

// stateID names a state by its step and hash.
type stateID struct {
	step int64
	hash [32]byte
}

func viewState(v *coordpb.View) stateID {
	id := stateID{step: v.CommittedStep}
	copy(id.hash[:], v.StateHash)
	return id
}

// syncPlan is how Syncing reaches the view's state.
type syncPlan uint8

const (
	keep syncPlan = iota
	rollBack
	download
)

// planSync chooses how a replica holding have (and, if undoHeld, the state before its
// newest step, undo) reaches want.
func planSync(want, have, undo stateID, undoHeld bool) syncPlan {
	switch {
	case have == want:
		return keep
	case undoHeld && undo == want:
		return rollBack
	}
	return download
}
