package allreduce

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// schedMsg is a piece in the scripted ring of TestScheduleRing: the set of members whose
// values each value of the piece holds.
type schedMsg struct {
	phase    ringpb.Phase
	c, p     int
	contribs []uint64
}

// TestScheduleRing runs the schedule alone: n members pass pieces over FIFO links in a
// random order, each value a bit set of the members summed into it. Every member must end
// with every value holding each member exactly once, after sending and receiving exactly
// the counts the schedule announced.
func TestScheduleRing(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 2; n <= 17; n++ {
		for _, tc := range []struct{ length, pe int }{{0, 4}, {1, 4}, {n - 1, 1}, {n + 1, 1}, {37*n + 5, 8}, {1000, 64}, {50, 1000}} {
			t.Run(fmt.Sprintf("n=%d/len=%d/pe=%d", n, tc.length, tc.pe), func(t *testing.T) {
				scheduleRing(t, rng, n, tc.length, tc.pe)
			})
		}
	}
}

func scheduleRing(t *testing.T, rng *rand.Rand, n, length, pe int) {
	full := uint64(1)<<n - 1
	scheds := make([]*schedule, n)
	vals := make([][]uint64, n)
	inbox := make([][]schedMsg, n) // from the left neighbour, in order
	sent := make([]int, n)
	for r := range n {
		scheds[r] = newSchedule(n, r, length, pe)
		vals[r] = make([]uint64, length)
		for i := range vals[r] {
			vals[r][i] = 1 << r
		}
	}
	send := func(r int, phase ringpb.Phase, c, p int) {
		lo, hi := scheds[r].span(c, p)
		right := (r + 1) % n
		inbox[right] = append(inbox[right], schedMsg{phase, c, p, append([]uint64(nil), vals[r][lo:hi]...)})
		sent[r]++
	}
	for r, s := range scheds {
		for p := range s.pieces(s.start()) {
			send(r, ringpb.Phase_PHASE_REDUCE_SCATTER, s.start(), p)
		}
	}
	for {
		var ready []int
		for r := range inbox {
			if len(inbox[r]) > 0 {
				ready = append(ready, r)
			}
		}
		if len(ready) == 0 {
			break
		}
		r := ready[rng.IntN(len(ready))]
		m := inbox[r][0]
		inbox[r] = inbox[r][1:]
		s := scheds[r]
		act, err := s.receive(m.phase, m.c, m.p)
		if err != nil {
			t.Fatalf("member %d: %v", r, err)
		}
		lo, _ := s.span(m.c, m.p)
		switch act {
		case addForward, addComplete:
			for i, x := range m.contribs {
				if vals[r][lo+i]&x != 0 {
					t.Fatalf("member %d: value %d would hold members %b twice", r, lo+i, vals[r][lo+i]&x)
				}
				vals[r][lo+i] |= x
			}
			if act == addForward {
				send(r, ringpb.Phase_PHASE_REDUCE_SCATTER, m.c, m.p)
				break
			}
			for i := range m.contribs {
				if vals[r][lo+i] != full {
					t.Fatalf("member %d: completed value %d holds %b", r, lo+i, vals[r][lo+i])
				}
			}
			send(r, ringpb.Phase_PHASE_ALL_GATHER, m.c, m.p)
		case store, storeForward:
			copy(vals[r][lo:], m.contribs)
			if act == storeForward {
				send(r, ringpb.Phase_PHASE_ALL_GATHER, m.c, m.p)
			}
		}
	}
	for r, s := range scheds {
		if !s.done() || s.received != s.recvs || sent[r] != s.sends {
			t.Fatalf("member %d: done %v, received %d of %d, sent %d of %d", r, s.done(), s.received, s.recvs, sent[r], s.sends)
		}
		for i, v := range vals[r] {
			if v != full {
				t.Fatalf("member %d: value %d holds %d members (%b)", r, i, bits.OnesCount64(v), v)
			}
		}
	}
}

// TestScheduleRefuses: pieces a member can never receive are errors, and so are repeats.
func TestScheduleRefuses(t *testing.T) {
	rs, ag := ringpb.Phase_PHASE_REDUCE_SCATTER, ringpb.Phase_PHASE_ALL_GATHER
	// 4 members, rank 1: starts chunk 1, owns chunk 2, chunks of 25 values in pieces of 10.
	for _, tc := range []struct {
		name  string
		phase ringpb.Phase
		c, p  int
	}{
		{"chunk out of range", rs, 4, 0},
		{"negative chunk", rs, -1, 0},
		{"piece out of range", rs, 0, 3},
		{"reduce-scatter of the start chunk", rs, 1, 0},
		{"all-gather of the owned chunk", ag, 2, 0},
		{"no phase", ringpb.Phase_PHASE_UNSPECIFIED, 0, 0},
	} {
		s := newSchedule(4, 1, 100, 10)
		if _, err := s.receive(tc.phase, tc.c, tc.p); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	s := newSchedule(4, 1, 100, 10)
	for _, m := range []struct {
		phase ringpb.Phase
		c     int
		want  action
	}{{rs, 0, addForward}, {rs, 2, addComplete}, {ag, 0, storeForward}, {ag, 3, store}} {
		if a, err := s.receive(m.phase, m.c, 2); err != nil || a != m.want {
			t.Errorf("%v chunk %d: %v, %v; want %v", m.phase, m.c, a, err, m.want)
		}
		if _, err := s.receive(m.phase, m.c, 2); err == nil {
			t.Errorf("%v chunk %d again: no error", m.phase, m.c)
		}
	}
}
