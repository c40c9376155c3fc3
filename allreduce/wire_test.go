package allreduce

import (
	"encoding/binary"
	"math"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/ncsn/ncsn/proto/ringpb"
)

func segments(b []byte, cuts ...int) mem.BufferSlice {
	var bs mem.BufferSlice
	prev := 0
	for _, c := range cuts {
		if c > prev && c < len(b) {
			bs = append(bs, mem.SliceBuffer(b[prev:c]))
			prev = c
		}
	}
	return append(bs, mem.SliceBuffer(b[prev:]))
}

// wirePiece is p as a protobuf message, payload included.
func wirePiece(p *Piece) *ringpb.Piece {
	m := &ringpb.Piece{Run: p.Run, Epoch: p.Epoch, Step: p.Step, Phase: p.Phase, Chunk: p.Chunk, Piece: p.Index, Codec: p.Codec, Length: p.Length}
	if p.payloadLen() > 0 {
		m.Payload = p.Payload.Materialize()
	}
	return m
}

// TestFloatRuns: runs cover every value once, in order, however the bytes are split.
func TestFloatRuns(t *testing.T) {
	const n = 50
	b := make([]byte, 4*n)
	for i := range n {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(i)))
	}
	for _, cuts := range [][]int{nil, {1}, {2, 3}, {4, 8}, {5, 6, 7, 9, 13, 101}, {3, 197}} {
		var got []float32
		floatRuns(segments(b, cuts...), func(i int, r []byte) {
			if i != len(got) || len(r)%4 != 0 {
				t.Fatalf("cuts %v: run at %d of %d bytes after %d values", cuts, i, len(r), len(got))
			}
			for k := 0; k < len(r); k += 4 {
				got = append(got, math.Float32frombits(binary.LittleEndian.Uint32(r[k:])))
			}
		})
		if len(got) != n {
			t.Fatalf("cuts %v: %d values", cuts, len(got))
		}
		for i, v := range got {
			if v != float32(i) {
				t.Fatalf("cuts %v: [%d] = %g", cuts, i, v)
			}
		}
	}
}

// TestWireCodecRoundTrip: what the ring codec marshals is plain protobuf of the size WireSize
// says, and it reads back both its own output and the standard encoding, however the
// transport splits the bytes.
func TestWireCodecRoundTrip(t *testing.T) {
	payload := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	for _, hdr := range []Piece{
		{Run: "run-1", Epoch: 3, Step: 99, Phase: ringpb.Phase_PHASE_ALL_GATHER, Chunk: 2, Index: 5, Codec: 17, Length: 1 << 40},
		{Run: "r", Phase: -1, Length: 1},
		{},
	} {
		for _, withPayload := range []bool{true, false} {
			p := hdr
			if withPayload {
				p.Payload = mem.BufferSlice{mem.SliceBuffer(payload)}
			}
			want := wirePiece(&p)
			size := p.WireSize()
			bs, err := wireCodec{}.Marshal(&p)
			if err != nil {
				t.Fatal(err)
			}
			if p.Payload != nil {
				t.Error("Marshal kept the payload")
			}
			ours := bs.Materialize()
			if size != len(ours) || size != proto.Size(want) {
				t.Errorf("%v: WireSize %d, encoded %d bytes, protobuf %d", want, size, len(ours), proto.Size(want))
			}
			var std ringpb.Piece
			if err := proto.Unmarshal(ours, &std); err != nil || !proto.Equal(&std, want) {
				t.Fatalf("standard decoding of ours: %v, %v", &std, err)
			}
			stdBytes, _ := proto.Marshal(want)
			for _, b := range [][]byte{ours, stdBytes} {
				for _, cuts := range [][]int{nil, {1}, {5, 20}, {len(b) - 3}, {10, 11, 12, 40}} {
					in := &Piece{}
					if err := (wireCodec{}).Unmarshal(segments(b, cuts...), in); err != nil {
						t.Fatal(err)
					}
					if got := wirePiece(in); !proto.Equal(got, want) {
						t.Errorf("cuts %v: got %v, want %v", cuts, got, want)
					}
					in.Free()
				}
			}
		}
	}
}

// FuzzWireUnmarshal compares the ring codec's fast path with protobuf on arbitrary bytes.
func FuzzWireUnmarshal(f *testing.F) {
	full, _ := proto.Marshal(&ringpb.Piece{Run: "r", Epoch: 1, Step: 2, Phase: 1, Chunk: 3, Piece: 4, Codec: 5, Length: 6, Payload: []byte{1, 2, 3}})
	f.Add(full, uint16(3))
	f.Add([]byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		in := &Piece{}
		err := (wireCodec{}).Unmarshal(segments(b, int(cut)), in)
		var want ringpb.Piece
		werr := proto.Unmarshal(b, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("codec error %v, protobuf error %v", err, werr)
		}
		if err == nil && !proto.Equal(wirePiece(in), &want) {
			t.Fatalf("codec %v, protobuf %v", wirePiece(in), &want)
		}
	})
}
