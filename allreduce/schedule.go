package allreduce

import (
	"fmt"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// schedule is one member's part in a ring all-reduce: which pieces it sends first, what it
// does with each piece it receives, and when it is done. It does no I/O; the operation
// (op.go) encodes, decodes and sends as it says.
//
// The buffer is split into n chunks, each into pieces of at most pe values. In reduce-scatter
// chunk c starts at member c and goes round the ring, each member adding its values, until it
// completes at member c-1, which owns its sum; in all-gather the owner sends the sum round
// until it reaches the member before the owner.
type schedule struct {
	n, rank int
	pe      int   // values per piece
	lo      []int // chunk c is values [lo[c], lo[c+1])
	pbase   []int // index of chunk c's first piece among all pieces
	// sends and recvs are the pieces this member sends and receives in all.
	sends, recvs int
	seen         []bool // per phase and piece: received
	received     int
}

// action is what a member does with a piece it has received.
type action uint8

const (
	// addForward: add the piece to this member's values and send the partial sum on.
	addForward action = iota
	// addComplete: add the piece; the sum of the owned chunk is complete, so send it in
	// all-gather.
	addComplete
	// storeForward: take the piece's values (all-gather) and send the same bytes on.
	storeForward
	// store: take the piece's values; the right neighbour owns the chunk.
	store
)

func newSchedule(n, rank, length, pe int) *schedule {
	s := &schedule{n: n, rank: rank, pe: pe, lo: make([]int, n+1), pbase: make([]int, n+1)}
	for c := 0; c <= n; c++ {
		s.lo[c] = int(int64(c) * int64(length) / int64(n))
	}
	for c := 0; c < n; c++ {
		s.pbase[c+1] = s.pbase[c] + s.pieces(c)
	}
	total := s.pbase[n]
	own, start, last := s.owned(), s.start(), (rank+2)%n
	// Reduce-scatter: every chunk but the owned one (the start chunk first, then forwards);
	// all-gather: the owned chunk, then forwards of all but the owned and the last.
	s.sends = total - s.pieces(own) + s.pieces(own) + total - s.pieces(own) - s.pieces(last)
	// Every chunk but the start one in reduce-scatter, all but the owned in all-gather.
	s.recvs = total - s.pieces(start) + total - s.pieces(own)
	s.seen = make([]bool, 2*total)
	return s
}

// start is the chunk this member sends first, whole: its own values.
func (s *schedule) start() int { return s.rank }

// owned is the chunk whose sum completes at this member.
func (s *schedule) owned() int { return (s.rank + 1) % s.n }

func (s *schedule) pieces(c int) int { return (s.lo[c+1] - s.lo[c] + s.pe - 1) / s.pe }

// span is the values [lo, hi) of piece p of chunk c.
func (s *schedule) span(c, p int) (lo, hi int) {
	lo = s.lo[c] + p*s.pe
	return lo, min(lo+s.pe, s.lo[c+1])
}

// done reports whether every piece has been received.
func (s *schedule) done() bool { return s.received == s.recvs }

// receive records piece p of chunk c of phase and says what to do with it; an error names
// a piece this member cannot receive (out of range, its own, or a repeat).
func (s *schedule) receive(phase ringpb.Phase, c, p int) (action, error) {
	if c < 0 || c >= s.n || p < 0 || p >= s.pieces(c) {
		return 0, fmt.Errorf("no piece %d of chunk %d", p, c)
	}
	idx := s.pbase[c] + p
	var a action
	switch phase {
	case ringpb.Phase_PHASE_REDUCE_SCATTER:
		if c == s.start() {
			return 0, fmt.Errorf("reduce-scatter piece %d of chunk %d, which starts here", p, c)
		}
		a = addForward
		if c == s.owned() {
			a = addComplete
		}
	case ringpb.Phase_PHASE_ALL_GATHER:
		if c == s.owned() {
			return 0, fmt.Errorf("all-gather piece %d of chunk %d, which is owned here", p, c)
		}
		idx += s.pbase[s.n]
		a = storeForward
		if c == (s.rank+2)%s.n {
			a = store
		}
	default:
		return 0, fmt.Errorf("phase %v", phase)
	}
	if s.seen[idx] {
		return 0, fmt.Errorf("%v piece %d of chunk %d again", phase, p, c)
	}
	s.seen[idx] = true
	s.received++
	return a, nil
}
