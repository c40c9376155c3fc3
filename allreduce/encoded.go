package allreduce

import (
	"fmt"
	"slices"

	"google.golang.org/grpc/mem"
)

// Encoded is the result of an all-reduce in its wire encoding: the pieces that every member
// decoded its copy of the sum from. Decoding them gives those values bit for bit, so a member
// can hand the sum on (to a coordinator, say) at the compressed size. Reuse one Encoded
// across operations to reuse its memory.
type Encoded struct {
	Codec  Codec
	Length int // values in the buffer
	arena  []byte
	spans  []span
}

type span struct{ off, count, lo, hi int } // values [off, off+count) are arena[lo:hi]

// EncodedSpan is count values from offset on, encoded as Data.
type EncodedSpan struct {
	Offset, Count int
	Data          []byte
}

func (e *Encoded) reset(c Codec, length int) {
	e.Codec, e.Length = c, length
	e.arena, e.spans = e.arena[:0], e.spans[:0]
}

func (e *Encoded) add(off, count int, data []byte) {
	lo := len(e.arena)
	e.arena = append(e.arena, data...)
	e.spans = append(e.spans, span{off, count, lo, len(e.arena)})
}

func (e *Encoded) addSegs(off, count int, segs mem.BufferSlice) {
	lo := len(e.arena)
	e.arena = slices.Grow(e.arena, segs.Len())[:lo+segs.Len()]
	segs.CopyTo(e.arena[lo:])
	e.spans = append(e.spans, span{off, count, lo, len(e.arena)})
}

// Spans returns the pieces in buffer order; their Data alias e until its next use. It is
// empty if the operation did not encode (codec none, or a single member).
func (e *Encoded) Spans() []EncodedSpan {
	out := make([]EncodedSpan, len(e.spans))
	for i, s := range e.spans {
		out[i] = EncodedSpan{Offset: s.off, Count: s.count, Data: e.arena[s.lo:s.hi]}
	}
	slices.SortFunc(out, func(a, b EncodedSpan) int { return a.Offset - b.Offset })
	return out
}

// DecodeSpans writes the values of spans into dst, which they must cover exactly once, in
// any order. Bad bytes or a bad layout give an error wrapping ErrCorrupt.
func (d *Decoder) DecodeSpans(dst []float32, spans []EncodedSpan) error {
	sorted := slices.SortedFunc(slices.Values(spans), func(a, b EncodedSpan) int { return a.Offset - b.Offset })
	next := 0
	for _, s := range sorted {
		if s.Offset != next || s.Count <= 0 || s.Count > len(dst)-next {
			return fmt.Errorf("%w: span of %d values at %d, want values from %d of %d", ErrCorrupt, s.Count, s.Offset, next, len(dst))
		}
		if err := d.Decode(dst[s.Offset:s.Offset+s.Count], s.Data); err != nil {
			return fmt.Errorf("span at %d: %w", s.Offset, err)
		}
		next += s.Count
	}
	if next != len(dst) {
		return fmt.Errorf("%w: spans cover %d of %d values", ErrCorrupt, next, len(dst))
	}
	return nil
}
