package allreduce

import (
	"context"

	"google.golang.org/grpc/mem"

	"github.com/ncsn/ncsn/proto/ringpb"
)

// Transport carries a member's pieces to its right-hand neighbours and their refusals back.
// gRPC is the production transport (the default, secured by Config's TLS and credential
// fields; neighbours serve it with Serve); MemnetTransport runs rings over a simulated network.
type Transport interface {
	// Open opens a stream to the member at addr, which serves it with Ring.Accept. The
	// stream ends when ctx is done.
	Open(ctx context.Context, addr string) (Stream, error)
}

// inPlaceSender is implemented by transports whose streams are done with a payload's bytes
// when Send returns (they have written them out): the ring then sends raw pieces straight
// from the caller's buffer instead of a copy.
type inPlaceSender interface{ sendsInPlace() bool }

// Stream is the sending end of a stream to a right-hand neighbour: pieces go one way,
// refusals the other.
type Stream interface {
	// Send sends p after the pieces sent before it, blocking while the stream's flow control
	// window is full. It takes p.Payload whatever it returns; p itself can be reused.
	Send(p *Piece) error
	// Recv returns the next refusal, or an error once the stream has ended (io.EOF when the
	// neighbour ended it cleanly).
	Recv() (*ringpb.Refusal, error)
	// CloseSend tells the neighbour that no more pieces follow.
	CloseSend() error
}

// Inbound is the receiving end of a stream from a left-hand neighbour, served by Ring.Accept.
type Inbound interface {
	// Recv returns the next piece, which the caller then owns; io.EOF after the sender's
	// CloseSend.
	Recv() (*Piece, error)
	// Send sends a refusal back to the sender.
	Send(*ringpb.Refusal) error
}

// Piece is one message from a member to its right-hand neighbour: a run of values of one
// chunk in one phase of one operation. Its wire form is ringpb.Piece.
type Piece struct {
	// The operation.
	Run         string
	Epoch, Step uint64
	// The place of the payload in the operation.
	Phase ringpb.Phase
	Chunk uint32
	Index uint32 // of the piece within its chunk
	// Codec is the codec's wire id, Length the values in the whole buffer: both ends must
	// agree on them.
	Codec  uint32
	Length uint64
	// Payload is owned by whoever holds the piece: freed once used, or handed on.
	Payload mem.BufferSlice
}

func (p *Piece) payloadLen() int { return p.Payload.Len() }

// Free frees the payload.
func (p *Piece) Free() {
	p.Payload.Free()
	p.Payload = nil
}

// forward hands the payload to a piece to send; p gives it up.
func (p *Piece) forward() mem.BufferSlice {
	s := p.Payload
	p.Payload = nil
	return s
}

// contiguous returns the payload as one slice: the segment itself if there is one, else a
// copy in *scratch, grown as needed.
func (p *Piece) contiguous(scratch *[]byte) []byte {
	if len(p.Payload) == 1 {
		return p.Payload[0].ReadOnlyData()
	}
	n := p.Payload.Len()
	if cap(*scratch) < n {
		*scratch = make([]byte, n)
	}
	b := (*scratch)[:n]
	p.Payload.CopyTo(b)
	return b
}
