package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestEncodedResult: every member's Encoded decodes to exactly the values it ended with,
// for every codec that encodes, whatever the layout of chunks and pieces.
func TestEncodedResult(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for _, n := range []int{1, 2, 3, 5} {
		ms := startMembers(t, n, nil)
		for _, c := range allCodecs() {
			for _, l := range []int{0, 7, 3000, 20_000} {
				t.Run(fmt.Sprintf("n=%d/%v/len=%d", n, c, l), func(t *testing.T) {
					bufs := make([][]float32, n)
					encs := make([]*Encoded, n)
					for i := range bufs {
						bufs[i] = gradient(rng, l)
						encs[i] = &Encoded{arena: []byte("stale"), spans: []span{{1, 2, 3, 4}}}
					}
					op := Op{Run: "enc", Epoch: 1, Step: rng.Uint64(), Members: addrs(ms), Codec: c}
					var wg sync.WaitGroup
					errs := make([]error, n)
					for i, m := range ms {
						wg.Add(1)
						go func() {
							defer wg.Done()
							o := op
							o.Encoded = encs[i]
							_, errs[i] = m.ring.AllReduce(context.Background(), o, bufs[i])
						}()
					}
					wg.Wait()
					if err := errors.Join(errs...); err != nil {
						t.Fatal(err)
					}
					for i, e := range encs {
						spans := e.Spans()
						if c == (Codec{}) || n == 1 {
							if len(spans) != 0 {
								t.Fatalf("member %d: %d spans, want none", i, len(spans))
							}
							continue
						}
						if e.Codec != c || e.Length != l {
							t.Fatalf("member %d: codec %v length %d", i, e.Codec, e.Length)
						}
						dec, _ := NewDecoder(c)
						got := make([]float32, l)
						if err := dec.DecodeSpans(got, spans); err != nil {
							t.Fatalf("member %d: %v", i, err)
						}
						for k := range got {
							if math.Float32bits(got[k]) != math.Float32bits(bufs[i][k]) {
								t.Fatalf("member %d [%d]: decoded %g, buffer %g", i, k, got[k], bufs[i][k])
							}
						}
					}
				})
			}
		}
	}
}

// TestDecodeSpansLayout: spans must cover the buffer exactly once.
func TestDecodeSpansLayout(t *testing.T) {
	c := Codec{QuantBF16, CompressNone}
	enc, _ := NewEncoder(c)
	dec, _ := NewDecoder(c)
	x := []float32{1, 2, 3, 4, 5, 6}
	a, b := enc.Encode(nil, x[:4], nil), enc.Encode(nil, x[4:], nil)
	for _, tc := range []struct {
		name  string
		spans []EncodedSpan
		ok    bool
	}{
		{"in order", []EncodedSpan{{0, 4, a}, {4, 2, b}}, true},
		{"any order", []EncodedSpan{{4, 2, b}, {0, 4, a}}, true},
		{"gap", []EncodedSpan{{0, 4, a}}, false},
		{"overlap", []EncodedSpan{{0, 4, a}, {3, 2, b}, {4, 2, b}}, false},
		{"past the end", []EncodedSpan{{0, 4, a}, {4, 4, b}}, false},
		{"empty span", []EncodedSpan{{0, 4, a}, {4, 0, nil}, {4, 2, b}}, false},
		{"short data", []EncodedSpan{{0, 4, a[:7]}, {4, 2, b}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make([]float32, len(x))
			err := dec.DecodeSpans(got, tc.spans)
			if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ok=%v or ErrCorrupt", err, tc.ok)
			}
			if tc.ok && fmt.Sprint(got) != fmt.Sprint(x) {
				t.Fatalf("decoded %v, want %v", got, x)
			}
		})
	}
}

// FuzzDecodeSpans: spans from the wire (a coordinator takes them from a commit) never make
// the decoder panic, and are accepted only if they cover the buffer.
func FuzzDecodeSpans(f *testing.F) {
	enc, _ := NewEncoder(Codec{QuantInt8, CompressZstd})
	good := enc.Encode(nil, []float32{1, -2, 3, 0.5, 7}, nil)
	f.Add(good, uint8(0), uint8(5), uint8(0), false)
	f.Add(good, uint8(2), uint8(3), uint8(4), true)
	f.Fuzz(func(t *testing.T, data []byte, cut, count, off uint8, split bool) {
		for _, c := range allCodecs() {
			dec, _ := NewDecoder(c)
			dst := make([]float32, 5)
			spans := []EncodedSpan{{Offset: int(off) % 8, Count: int(count) % 8, Data: data}}
			if split {
				k := min(int(cut), len(data))
				spans = []EncodedSpan{{Offset: 0, Count: int(off) % 6, Data: data[:k]}, {Offset: int(off) % 6, Count: int(count) % 8, Data: data[k:]}}
			}
			err := dec.DecodeSpans(dst, spans)
			covered := 0
			for _, s := range spans {
				covered += s.Count
			}
			if err == nil && covered != len(dst) {
				t.Fatalf("%v: accepted spans covering %d of %d values", c, covered, len(dst))
			}
		}
	})
}
