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
// buffer it was encoded in, and a received one is copied once, into a pooled buffer.
const wireCodecName = "ncsn-ring"

func init() { encoding.RegisterCodecV2(wireCodec{}) }

type wireCodec struct{}

func (wireCodec) Name() string { return wireCodecName }

// outPiece is a Piece to send whose payload is a pooled buffer, freed by gRPC once written.
type outPiece struct {
	ringpb.Piece // without Payload
	payload      mem.Buffer
}

// inPiece is a received Piece whose Payload lives in buf, from payloadPool, if not nil.
type inPiece struct {
	ringpb.Piece
	buf *[]byte
}

// release returns the payload buffer to the pool; the piece must not be used afterwards.
func (in *inPiece) release() {
	if in.buf != nil {
		payloadPool.Put(in.buf)
		in.buf, in.Payload = nil, nil
	}
}

// forward hands the payload buffer to a piece to send; in gives up its payload.
func (in *inPiece) forward() mem.Buffer {
	var b mem.Buffer
	if in.buf != nil {
		b = mem.NewBuffer(in.buf, payloadPool)
	} else {
		b = mem.SliceBuffer(in.Payload)
	}
	in.buf, in.Payload = nil, nil
	return b
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
	return mem.BufferSlice{mem.SliceBuffer(hdr), o.payload}, nil
}

const payloadField = 9

// wireSize is the encoded size of o.
func (o *outPiece) wireSize() int {
	return proto.Size(&o.Piece) + protowire.SizeTag(payloadField) + protowire.SizeBytes(o.payload.Len())
}

func (in *inPiece) wireSize() int { return proto.Size(&in.Piece) }

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
	if ok, err := in.unmarshalFast(data); ok || err != nil {
		return err
	}
	return proto.Unmarshal(data.Materialize(), &in.Piece)
}

// unmarshalFast parses the header fields and copies the payload straight into a pooled buffer.
// It declines (false, nil) messages whose payload is not the last field.
func (in *inPiece) unmarshalFast(data mem.BufferSlice) (bool, error) {
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
			return false, nil
		}
		if num == payloadField && typ == protowire.BytesType {
			l, m := protowire.ConsumeVarint(b[off+n:])
			if m < 0 || uint64(total-(off+n+m)) != l {
				return false, nil
			}
			start := off + n + m
			in.buf = payloadPool.Get(int(l))
			copyFrom(*in.buf, data, start)
			p.Payload = *in.buf
			return true, nil
		}
		off += n
		if typ == protowire.BytesType && num == 1 {
			s, m := protowire.ConsumeString(b[off:])
			if m < 0 || !utf8.ValidString(s) { // proto3 strings must be UTF-8
				return false, nil
			}
			p.Run, off = s, off+m
			continue
		}
		if typ != protowire.VarintType {
			return false, nil
		}
		x, m := protowire.ConsumeVarint(b[off:])
		if m < 0 {
			return false, nil
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
			return false, nil
		}
	}
	// No payload field within the prefix: an empty payload, or a layout left to proto.
	if off == total {
		return true, nil
	}
	proto.Reset(p)
	return false, nil
}

// copyFrom copies data[start:start+len(dst)] into dst.
func copyFrom(dst []byte, data mem.BufferSlice, start int) {
	for _, seg := range data {
		s := seg.ReadOnlyData()
		if start >= len(s) {
			start -= len(s)
			continue
		}
		n := copy(dst, s[start:])
		dst, start = dst[n:], 0
		if len(dst) == 0 {
			return
		}
	}
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
