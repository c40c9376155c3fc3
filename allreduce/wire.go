package allreduce

import (
	"fmt"
	"math/bits"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// wireCodecName is the gRPC content-subtype of Pipe streams. The bytes are plain protobuf
// (ringpb.Piece, ringpb.Refusal), so a stock gRPC client or server can be the other end;
// wireCodec only avoids copying payloads: a sent payload goes to the transport from the
// buffers it was encoded or received in, and a received one stays in the buffer the
// transport read it into until the operation has decoded (and perhaps forwarded) it.
const wireCodecName = "ncsn-ring"

type wireCodec struct{}

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

// Field numbers of ringpb.Piece.
const (
	fieldRun protowire.Number = iota + 1
	fieldEpoch
	fieldStep
	fieldPhase
	fieldChunk
	fieldPiece
	fieldCodec
	fieldLength
	fieldPayload
)

// WireSize is the size of the piece's protobuf encoding: what a network carries for it.
func (p *Piece) WireSize() int {
	n := 0
	if p.Run != "" {
		n += protowire.SizeTag(fieldRun) + protowire.SizeBytes(len(p.Run))
	}
	for _, f := range p.varints() {
		if f.v != 0 {
			n += protowire.SizeTag(f.num) + protowire.SizeVarint(f.v)
		}
	}
	if l := p.payloadLen(); l > 0 {
		n += protowire.SizeTag(fieldPayload) + protowire.SizeBytes(l)
	}
	return n
}

type varintField struct {
	num protowire.Number
	v   uint64
}

func (p *Piece) varints() [7]varintField {
	return [7]varintField{
		{fieldEpoch, p.Epoch}, {fieldStep, p.Step}, {fieldPhase, uint64(p.Phase)}, {fieldChunk, uint64(p.Chunk)},
		{fieldPiece, uint64(p.Index)}, {fieldCodec, uint64(p.Codec)}, {fieldLength, p.Length},
	}
}

// appendHeader appends the protobuf encoding of every field but the payload, in field order
// as protobuf writes them.
func (p *Piece) appendHeader(b []byte) []byte {
	if p.Run != "" {
		b = protowire.AppendTag(b, fieldRun, protowire.BytesType)
		b = protowire.AppendString(b, p.Run)
	}
	for _, f := range p.varints() {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, f.v)
		}
	}
	return b
}

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	p, ok := v.(*Piece)
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
	if !utf8.ValidString(p.Run) { // as protobuf refuses
		return nil, fmt.Errorf("allreduce: run %q is not UTF-8", p.Run)
	}
	hdr := p.appendHeader(make([]byte, 0, 64+len(p.Run)))
	out := mem.BufferSlice{mem.SliceBuffer(hdr)}
	if l := p.payloadLen(); l > 0 {
		// The payload field goes last: protobuf allows fields in any order.
		out[0] = mem.SliceBuffer(protowire.AppendVarint(protowire.AppendTag(hdr, fieldPayload, protowire.BytesType), uint64(l)))
		out = append(out, p.Payload...)
	}
	p.Payload = nil // the transport owns and frees it now
	return out, nil
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*Piece)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("allreduce: cannot unmarshal into %T", v)
		}
		return proto.Unmarshal(data.Materialize(), m)
	}
	if p.unmarshalFast(data) {
		return nil
	}
	var m ringpb.Piece
	if err := proto.Unmarshal(data.Materialize(), &m); err != nil {
		return err
	}
	*p = *fromProto(&m)
	return nil
}

// fromProto is the Piece of a message decoded by protobuf; it takes m's payload.
func fromProto(m *ringpb.Piece) *Piece {
	p := &Piece{Run: m.Run, Epoch: m.Epoch, Step: m.Step, Phase: m.Phase, Chunk: m.Chunk, Index: m.Piece, Codec: m.Codec, Length: m.Length}
	if len(m.Payload) > 0 {
		p.Payload = mem.BufferSlice{mem.SliceBuffer(m.Payload)}
	}
	return p
}

// unmarshalFast parses the header fields and takes references to the payload's bytes where
// they lie. It declines messages whose payload is not the last field.
func (p *Piece) unmarshalFast(data mem.BufferSlice) bool {
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
	for off < len(b) {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return false
		}
		if num == fieldPayload && typ == protowire.BytesType {
			l, m := protowire.ConsumeVarint(b[off+n:])
			if m < 0 || uint64(total-(off+n+m)) != l {
				return false
			}
			p.Payload = refRange(data, off+n+m)
			return true
		}
		off += n
		if typ == protowire.BytesType && num == fieldRun {
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
		case fieldEpoch:
			p.Epoch = x
		case fieldStep:
			p.Step = x
		case fieldPhase:
			p.Phase = ringpb.Phase(int32(x))
		case fieldChunk:
			p.Chunk = uint32(x)
		case fieldPiece:
			p.Index = uint32(x)
		case fieldCodec:
			p.Codec = uint32(x)
		case fieldLength:
			p.Length = x
		default:
			return false
		}
	}
	// No payload field within the prefix: an empty payload, or a layout left to protobuf.
	if off == total {
		return true
	}
	*p = Piece{}
	return false
}

// refRange returns new references to the bytes of data from start on; the caller frees data
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
// The transport reads messages into it too: unlike gRPC's default pool it does not zero
// buffers, which are always overwritten before use.
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
