package allreduce

import (
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

// TestWireCodecRoundTrip: what the ring codec marshals is plain protobuf, and it reads back
// both its own output and the standard encoding, however the transport splits the bytes.
func TestWireCodecRoundTrip(t *testing.T) {
	hdr := ringpb.Piece{Run: "run-1", Epoch: 3, Step: 99, Phase: ringpb.Phase_PHASE_ALL_GATHER, Chunk: 2, Piece: 5, Codec: 17, Length: 1 << 40}
	payload := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	o := &outPiece{payload: mem.SliceBuffer(payload)}
	proto.Merge(&o.Piece, &hdr)
	bs, err := wireCodec{}.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	ours := bs.Materialize()
	if o.wireSize() != len(ours) {
		t.Errorf("wireSize %d, encoded %d bytes", o.wireSize(), len(ours))
	}
	want := proto.Clone(&hdr).(*ringpb.Piece)
	want.Payload = payload
	var std ringpb.Piece
	if err := proto.Unmarshal(ours, &std); err != nil || !proto.Equal(&std, want) {
		t.Fatalf("standard decoding of ours: %v, %v", &std, err)
	}
	stdBytes, _ := proto.Marshal(want)
	for _, b := range [][]byte{ours, stdBytes} {
		for _, cuts := range [][]int{nil, {1}, {5, 20}, {len(b) - 3}, {10, 11, 12, 40}} {
			in := &inPiece{}
			if err := (wireCodec{}).Unmarshal(segments(b, cuts...), in); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&in.Piece, want) {
				t.Errorf("cuts %v: got %v, want %v", cuts, &in.Piece, want)
			}
			in.release()
		}
	}
}

// FuzzWireUnmarshal compares the ring codec's fast path with protobuf on arbitrary bytes.
func FuzzWireUnmarshal(f *testing.F) {
	full, _ := proto.Marshal(&ringpb.Piece{Run: "r", Epoch: 1, Step: 2, Phase: 1, Chunk: 3, Piece: 4, Codec: 5, Length: 6, Payload: []byte{1, 2, 3}})
	f.Add(full, uint16(3))
	f.Add([]byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		in := &inPiece{}
		err := (wireCodec{}).Unmarshal(segments(b, int(cut)), in)
		var want ringpb.Piece
		werr := proto.Unmarshal(b, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("codec error %v, protobuf error %v", err, werr)
		}
		if err == nil && !proto.Equal(&in.Piece, &want) {
			t.Fatalf("codec %v, protobuf %v", &in.Piece, &want)
		}
	})
}
