package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/ncsn/ncsn/proto/coordpb"
)

// The state stream carries a State from the coordinator to a worker that must resync: the
// first message holds the header (step, sizes, hash); the data is Params, EMA, Adam.M and
// Adam.V as little-endian float32, in that order, cut into messages of whole values, each
// saying at which byte of the data it starts. This file is the stream's one encoder and
// decoder.

// StateChunkBytes is the data size of one message of the state stream: well under gRPC's
// 4 MiB default message limit.
const StateChunkBytes = 1 << 20

// sections is the stream's order of s's buffers.
func (s *State) sections() [4][]float32 {
	return [4][]float32{s.Params, s.EMA, s.Adam.M, s.Adam.V}
}

func (s *State) streamValues() int {
	n := 0
	for _, sec := range s.sections() {
		n += len(sec)
	}
	return n
}

// EncodeStateStream copies s into the messages of its state stream, with data of at most
// chunkBytes (StateChunkBytes if chunkBytes < 4) per message. hash must be s.Hash(); it is
// passed in because the coordinator keeps it. The messages share one buffer and need no
// lock on s once returned.
func EncodeStateStream(s *State, hash [32]byte, chunkBytes int) []*coordpb.StateChunk {
	if chunkBytes < 4 {
		chunkBytes = StateChunkBytes
	}
	chunkBytes &^= 3
	buf := make([]byte, 0, 4*s.streamValues())
	for _, sec := range s.sections() {
		for _, v := range sec {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
	}
	hdr := &coordpb.StateHeader{Step: s.Step(), Params: uint64(len(s.Params)), Ema: uint64(len(s.EMA)), Hash: hash[:]}
	msgs := make([]*coordpb.StateChunk, 0, 1+len(buf)/chunkBytes)
	for off := 0; off == 0 || off < len(buf); off += chunkBytes {
		end := min(off+chunkBytes, len(buf))
		msgs = append(msgs, &coordpb.StateChunk{Data: buf[off:end:end], Offset: uint64(off)})
	}
	msgs[0].Header = hdr
	return msgs
}

// DecodeStateStream reads a state stream from recv (which returns io.EOF after the last
// message) into s, whose sizes must be the header's, and checks the result against the
// header's hash. It writes into s's own buffers and allocates nothing in proportion to what
// the stream announces. It returns the decoded state's hash; s.Step() is its step. On error
// s holds a partial state and must be resynchronised before use.
func DecodeStateStream(s *State, recv func() (*coordpb.StateChunk, error)) ([32]byte, error) {
	var hash [32]byte
	secs := s.sections()
	total := uint64(4 * s.streamValues())
	var hdr *coordpb.StateHeader
	var got uint64 // bytes of data received
	for i := 0; ; i++ {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return hash, fmt.Errorf("model: state stream: %w", err)
		}
		switch {
		case i == 0 && m.Header == nil:
			return hash, errors.New("model: state stream: the first message has no header")
		case i > 0 && m.Header != nil:
			return hash, fmt.Errorf("model: state stream: message %d repeats the header", i)
		case i == 0:
			hdr = m.Header
			if hdr.Params != uint64(len(s.Params)) || hdr.Ema != uint64(len(s.EMA)) {
				return hash, fmt.Errorf("model: state stream: %d parameters and %d EMA values, the model has %d and %d", hdr.Params, hdr.Ema, len(s.Params), len(s.EMA))
			}
			if hdr.Step < 0 || len(hdr.Hash) != len(hash) {
				return hash, fmt.Errorf("model: state stream: header with step %d and a hash of %d bytes", hdr.Step, len(hdr.Hash))
			}
		}
		n := uint64(len(m.Data))
		switch {
		case m.Offset != got:
			return hash, fmt.Errorf("model: state stream: message %d starts at byte %d, want %d (lost or reordered)", i, m.Offset, got)
		case n%4 != 0:
			return hash, fmt.Errorf("model: state stream: message %d has %d bytes, not whole float32 values", i, n)
		case n > total-got:
			return hash, fmt.Errorf("model: state stream: more than the %d bytes the header announced", total)
		}
		putFloats(secs, int(got/4), m.Data)
		got += n
	}
	if hdr == nil {
		return hash, errors.New("model: state stream: empty")
	}
	if got != total {
		return hash, fmt.Errorf("model: state stream: truncated at byte %d of %d", got, total)
	}
	s.Adam.Step = hdr.Step
	if hash = s.Hash(); string(hash[:]) != string(hdr.Hash) {
		return hash, fmt.Errorf("model: state stream: the state of step %d does not match its hash", hdr.Step)
	}
	return hash, nil
}

// putFloats writes the little-endian float32 values of src into the concatenation of secs,
// from value index at on.
func putFloats(secs [4][]float32, at int, src []byte) {
	for _, sec := range secs {
		if at >= len(sec) {
			at -= len(sec)
			continue
		}
		k := min(len(sec)-at, len(src)/4)
		for j := range k {
			sec[at+j] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*j:]))
		}
		src, at = src[4*k:], 0
		if len(src) == 0 {
			return
		}
	}
}
