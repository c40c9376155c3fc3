package allreduce

import (
	"fmt"
	"math/bits"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// wireCodecName is the gRPC content-subtype of Pipe streams. The bytes are plain protobuf;
// the codec only avoids copying payloads: a sent payload goes to the transport from the
// buffers it was encoded or received in, and a received one stays in the transport's frame
// buffers until the operation has decoded (and perhaps forwarded) it.
const wireCodecName = "ncsn-ring"

func init() { encoding.RegisterCodecV2(wireCodec{}) }

type wireCodec struct{}

func (wireCodec) Name() string { return wireCodecName }

// outPiece is a Piece to send whose payload is owned buffers, freed by gRPC once written.
type outPiece struct {
	ringpb.Piece // without Payload
	payload      mem.BufferSlice
}

// inPiece is a received Piece whose payload is in segs: references to the transport's
// receive buffers (or, after the slow path, to a copy). Piece.Payload is not used.
type inPiece struct {
	ringpb.Piece
	segs mem.BufferSlice
}

func (in *inPiece) payloadLen() int { return in.segs.Len() }

// release frees the payload; the piece must not be used afterwards.
func (in *inPiece) release() {
	in.segs.Free()
	in.segs = nil
}

// forward hands the payload to a piece to send; in gives it up.
func (in *inPiece) forward() mem.BufferSlice {
	s := in.segs
	in.segs = nil
	return s
}

// contiguous returns the payload as one slice: the segment itself if there is one, else a
// copy in *scratch, grown as needed.
func (in *inPiece) contiguous(scratch *[]byte) []byte {
	if len(in.segs) == 1 {
		return in.segs[0].ReadOnlyData()
	}
	n := in.segs.Len()
	if cap(*scratch) < n {
		*scratch = make([]byte, n)
	}
	b := (*scratch)[:n]
	in.segs.CopyTo(b)
	return b
}

// floatRuns calls fn(i, b) for consecutive runs b of whole little-endian float32 values in
// segs, i being the index of b's first value. A value split between segments comes as a
// 4-byte run of its own. segs must hold a whole number of values.
func floatRuns(segs mem.BufferSlice, fn func(i int, b []byte)) {
	var carry [4]byte
	nc, i := 0, 0
	for _, s := range segs {
		b := s.ReadOnlyData()
		if nc > 0 {
			k := copy(carry[nc:], b)
			nc, b = nc+k, b[k:]
			if nc < 4 {
				continue
			}
			fn(i, carry[:])
			i, nc = i+1, 0
		}
		if m := len(b) &^ 3; m > 0 {
			fn(i, b[:m])
			i += m / 4
			b = b[m:]
		}
		nc = copy(carry[:], b)
	}
}

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	o, ok := v.(*outPiece)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return nil, fmt.Errorf("allreduce: cannot marshal %T", v)
		}
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	hdr, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 0, 64+len(o.Run)), &o.Piece)
	if err != nil {
		return nil, err
	}
	// The payload field goes last: protobuf allows fields in any order.
	hdr = protowire.AppendTag(hdr, payloadField, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(o.payload.Len()))
	out := make(mem.BufferSlice, 0, 1+len(o.payload))
	out = append(append(out, mem.SliceBuffer(hdr)), o.payload...)
	o.payload = nil // gRPC owns and frees it now
	return out, nil
}

const payloadField = 9

// wireSize is the encoded size of o.
func (o *outPiece) wireSize() int { return wireSize(&o.Piece, o.payload.Len()) }

func (in *inPiece) wireSize() int { return wireSize(&in.Piece, in.payloadLen()) }

func wireSize(hdr *ringpb.Piece, payload int) int {
	n := proto.Size(hdr)
	if payload > 0 {
		n += protowire.SizeTag(payloadField) + protowire.SizeBytes(payload)
	}
	return n
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	in, ok := v.(*inPiece)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("allreduce: cannot unmarshal into %T", v)
		}
		b := data.Materialize()
		return proto.Unmarshal(b, m)
	}
	if in.unmarshalFast(data) {
		return nil
	}
	if err := proto.Unmarshal(data.Materialize(), &in.Piece); err != nil {
		return err
	}
	if len(in.Payload) > 0 {
		in.segs = mem.BufferSlice{mem.SliceBuffer(in.Payload)}
	}
	in.Payload = nil
	return nil
}

// unmarshalFast parses the header fields and takes references to the payload's bytes where
// they lie. It declines messages whose payload is not the last field.
func (in *inPiece) unmarshalFast(data mem.BufferSlice) bool {
	total := data.Len()
	var first []byte
	if len(data) > 0 {
		first = data[0].ReadOnlyData()
	}
	var prefix [512]byte
	b := first
	if len(first) < min(total, len(prefix)) {
		n, _ := data.Reader().Read(prefix[:min(total, len(prefix))])
		b = prefix[:n]
	}
	off := 0
	p := &in.Piece
	for off < len(b) {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return false
		}
		if num == payloadField && typ == protowire.BytesType {
			l, m := protowire.ConsumeVarint(b[off+n:])
			if m < 0 || uint64(total-(off+n+m)) != l {
				return false
			}
			in.segs = refRange(data, off+n+m)
			return true
		}
		off += n
		if typ == protowire.BytesType && num == 1 {
			s, m := protowire.ConsumeString(b[off:])
			if m < 0 || !utf8.ValidString(s) { // proto3 strings must be UTF-8
				return false
			}
			p.Run, off = s, off+m
			continue
		}
		if typ != protowire.VarintType {
			return false
		}
		x, m := protowire.ConsumeVarint(b[off:])
		if m < 0 {
			return false
		}
		off += m
		switch num {
		case 2:
			p.Epoch = x
		case 3:
			p.Step = x
		case 4:
			p.Phase = ringpb.Phase(int32(x))
		case 5:
			p.Chunk = uint32(x)
		case 6:
			p.Piece = uint32(x)
		case 7:
			p.Codec = uint32(x)
		case 8:
			p.Length = x
		default:
			return false
		}
	}
	// No payload field within the prefix: an empty payload, or a layout left to proto.
	if off == total {
		return true
	}
	proto.Reset(p)
	return false
}

// refRange returns new references to the bytes of data from start on; gRPC frees data itself
// when Unmarshal returns.
func refRange(data mem.BufferSlice, start int) mem.BufferSlice {
	var out mem.BufferSlice
	for _, seg := range data {
		l := seg.Len()
		if start >= l {
			start -= l
			continue
		}
		out = append(out, seg.Slice(start, l))
		start = 0
	}
	return out
}

// payloadPool holds payload buffers; they move from the transport to decoders and back.
// gRPC uses it too (ServerOptions, dial options) for frames: unlike gRPC's default pool it
// does not zero buffers, which are always overwritten before use.
var payloadPool = &tieredPool{}

// tieredPool keeps buffers by power-of-two capacity.
type tieredPool struct{ tiers [24]sync.Pool }

func (tp *tieredPool) Get(n int) *[]byte {
	t := bits.Len(uint(max(n, 1) - 1))
	if t >= len(tp.tiers) {
		b := make([]byte, n)
		return &b
	}
	if v, ok := tp.tiers[t].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<t)
	return &b
}

func (tp *tieredPool) Put(b *[]byte) {
	c := cap(*b)
	if c == 0 || c&(c-1) != 0 {
		return // not from Get
	}
	if t := bits.Len(uint(c)) - 1; t < len(tp.tiers) {
		tp.tiers[t].Put(b)
	}
}
