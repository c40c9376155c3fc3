package model

import (
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ncsn/ncsn/proto/coordpb"
)

// streamState is a state of n parameters after a few updates, so that every section differs.
func streamState(t testing.TB, n int, ema float64) *State {
	t.Helper()
	params := make([]float32, n)
	for i := range params {
		params[i] = float32(i)*0.25 - 1
	}
	s, err := NewState(params, AdamConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, ema)
	if err != nil {
		t.Fatal(err)
	}
	g := make([]float32, n)
	for step := range 3 {
		for i := range g {
			g[i] = float32((i+step)%7) - 3
		}
		if _, err := s.Apply(g, 4); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// emptyLike is a fresh state of s's shape.
func emptyLike(t testing.TB, s *State) *State {
	t.Helper()
	d, err := NewState(make([]float32, len(s.Params)), AdamConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, s.decay)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func replay(msgs []*coordpb.StateChunk) func() (*coordpb.StateChunk, error) {
	i := 0
	return func() (*coordpb.StateChunk, error) {
		if i == len(msgs) {
			return nil, io.EOF
		}
		i++
		return msgs[i-1], nil
	}
}

func TestStateStreamRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		ema   float64
		chunk int
	}{
		{"one message", 10, 0.9, 0},
		{"one value per message", 5, 0.9, 4},
		{"chunks across sections", 37, 0.99, 52},
		{"unaligned chunk size rounds down", 37, 0.99, 51},
		{"no EMA", 37, 0, 64},
		{"empty model", 0, 0.9, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := streamState(t, tc.n, tc.ema)
			msgs := EncodeStateStream(src, src.Hash(), tc.chunk)
			if msgs[0].Header == nil {
				t.Fatal("no header in the first message")
			}
			for i, m := range msgs {
				if tc.chunk >= 4 && len(m.Data) > tc.chunk {
					t.Errorf("message %d has %d bytes, more than %d", i, len(m.Data), tc.chunk)
				}
			}
			dst := emptyLike(t, src)
			h, err := DecodeStateStream(dst, replay(msgs))
			if err != nil {
				t.Fatal(err)
			}
			if h != src.Hash() || dst.Hash() != src.Hash() || dst.Step() != src.Step() {
				t.Fatalf("decoded state differs: step %d, want %d", dst.Step(), src.Step())
			}
		})
	}
}

func TestStateStreamErrors(t *testing.T) {
	src := streamState(t, 24, 0.9)
	good := func() []*coordpb.StateChunk { return EncodeStateStream(src, src.Hash(), 64) }
	if n := len(good()); n < 4 {
		t.Fatalf("want several messages, have %d", n)
	}
	for _, tc := range []struct {
		name string
		edit func([]*coordpb.StateChunk) []*coordpb.StateChunk
		want string
	}{
		{"empty", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { return nil }, "empty"},
		{"no header", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[0].Header = nil; return m }, "no header"},
		{"header twice", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[2].Header = m[0].Header; return m }, "repeats the header"},
		{"truncated", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { return m[:len(m)-1] }, "truncated"},
		{"lost message", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { return append(m[:1], m[2:]...) }, "lost or reordered"},
		{"reordered", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[1], m[2] = m[2], m[1]; return m }, "lost or reordered"},
		{"repeated", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { return append(m[:2], m[1:]...) }, "lost or reordered"},
		{"extra data", func(m []*coordpb.StateChunk) []*coordpb.StateChunk {
			last := m[len(m)-1]
			return append(m, &coordpb.StateChunk{Offset: last.Offset + uint64(len(last.Data)), Data: make([]byte, 4)})
		}, "more than"},
		{"partial value", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[1].Data = m[1].Data[:5]; return m }, "whole float32"},
		{"other model", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[0].Header.Params++; return m }, "the model has"},
		{"no EMA announced", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[0].Header.Ema = 0; return m }, "the model has"},
		{"short hash", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[0].Header.Hash = m[0].Header.Hash[:8]; return m }, "hash of 8 bytes"},
		{"negative step", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[0].Header.Step = -1; return m }, "step -1"},
		{"flipped bit", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[1].Data[3] ^= 1; return m }, "does not match its hash"},
		{"other step", func(m []*coordpb.StateChunk) []*coordpb.StateChunk { m[0].Header.Step++; return m }, "does not match its hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := good()
			// Each case edits its own copy: the messages share one data buffer.
			for i, m := range msgs {
				c := proto.Clone(m).(*coordpb.StateChunk)
				msgs[i] = c
			}
			_, err := DecodeStateStream(emptyLike(t, src), replay(tc.edit(msgs)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("receive error", func(t *testing.T) {
		boom := errors.New("connection reset")
		_, err := DecodeStateStream(emptyLike(t, src), func() (*coordpb.StateChunk, error) { return nil, boom })
		if !errors.Is(err, boom) {
			t.Fatalf("error %v, want it to wrap %v", err, boom)
		}
	})
}

// TestStateStreamNoAllocation: a header announcing an enormous state costs the decoder a
// few bytes for its error, not a buffer of the announced size.
func TestStateStreamNoAllocation(t *testing.T) {
	src := streamState(t, 8, 0.9)
	dst := emptyLike(t, src)
	huge := []*coordpb.StateChunk{{Header: &coordpb.StateHeader{Params: 1 << 40, Ema: 1 << 40, Hash: make([]byte, 32)}}}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := DecodeStateStream(dst, replay(huge)); err == nil {
			t.Fatal("a header of 2^40 parameters was accepted")
		}
	}
	runtime.ReadMemStats(&after)
	if b := after.TotalAlloc - before.TotalAlloc; b > 10<<10 {
		t.Errorf("10 decodes of a huge header allocated %d bytes", b)
	}
}

// FuzzDecodeStateStream feeds the decoder arbitrary message sequences: each is a uvarint
// length and a protobuf StateChunk. It must never panic, and a stream it accepts must be a
// state whose hash is the one it returns.
func FuzzDecodeStateStream(f *testing.F) {
	src := streamState(f, 9, 0.9)
	frame := func(msgs []*coordpb.StateChunk) []byte {
		var b []byte
		for _, m := range msgs {
			p, err := proto.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			b = binary.AppendUvarint(b, uint64(len(p)))
			b = append(b, p...)
		}
		return b
	}
	msgs := EncodeStateStream(src, src.Hash(), 16)
	f.Add(frame(msgs))
	f.Add(frame(msgs[:len(msgs)-1]))
	f.Add(frame([]*coordpb.StateChunk{msgs[0], msgs[2], msgs[1]}))
	f.Add(frame(EncodeStateStream(src, src.Hash(), 0)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var msgs []*coordpb.StateChunk
		for len(b) > 0 {
			n, k := binary.Uvarint(b)
			if k <= 0 || n > uint64(len(b)-k) {
				break
			}
			m := &coordpb.StateChunk{}
			if proto.Unmarshal(b[k:k+int(n)], m) != nil {
				break
			}
			msgs = append(msgs, m)
			b = b[k+int(n):]
		}
		dst := emptyLike(t, src)
		h, err := DecodeStateStream(dst, replay(msgs))
		if err == nil && (dst.Hash() != h || string(msgs[0].Header.Hash) != string(h[:])) {
			t.Fatal("accepted a stream whose state does not have the returned hash")
		}
	})
}
