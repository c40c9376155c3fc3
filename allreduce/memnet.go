package allreduce

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/ncsn/ncsn/allreduce/memnet"
	"github.com/ncsn/ncsn/proto/ringpb"
)

// MemnetTransport is the Transport of member self on a simulated network: rings of many
// members in one process, with the network's latency, bandwidth and faults. Each member
// serves its end with ServeMemnet.
func MemnetTransport(n *memnet.Net, self string) Transport { return memnetTransport{n, self} }

type memnetTransport struct {
	n    *memnet.Net
	self string
}

func (t memnetTransport) Open(ctx context.Context, addr string) (Stream, error) {
	c, err := t.n.Dial(ctx, t.self, addr)
	if err != nil {
		return nil, err
	}
	return memnetStream{c}, nil
}

// Size and Release make a Piece a memnet.Message.
func (p *Piece) Size() int { return p.WireSize() }
func (p *Piece) Release()  { p.Free() }

type refusalMessage struct{ *ringpb.Refusal }

func (m refusalMessage) Size() int { return proto.Size(m.Refusal) }

type memnetStream struct{ c *memnet.Conn }

func (s memnetStream) Send(p *Piece) error {
	m := *p // the caller reuses p
	p.Payload = nil
	return s.c.Send(&m)
}

func (s memnetStream) Recv() (*ringpb.Refusal, error) {
	m, err := s.c.Recv()
	if err != nil {
		return nil, err
	}
	return m.(refusalMessage).Refusal, nil
}

func (s memnetStream) CloseSend() error { return s.c.CloseSend() }

type memnetInbound struct{ c *memnet.Conn }

func (in memnetInbound) Recv() (*Piece, error) {
	m, err := in.c.Recv()
	if err != nil {
		return nil, err
	}
	return m.(*Piece), nil
}

func (in memnetInbound) Send(ref *ringpb.Refusal) error { return in.c.Send(refusalMessage{ref}) }

// ServeMemnet serves the ring on n at Config.Self until ctx is done or the Ring is closed (or
// the node crashes), and returns once every stream it accepted has ended.
func (r *Ring) ServeMemnet(ctx context.Context, n *memnet.Net) error {
	lis, err := n.Listen(r.cfg.Self)
	if err != nil {
		return fmt.Errorf("allreduce: %w", err)
	}
	var (
		mu     sync.Mutex
		conns  = map[*memnet.Conn]bool{}
		wg     sync.WaitGroup
		closed = make(chan struct{})
	)
	// Like a gRPC server's Stop: the listener and every accepted stream end together.
	stop := func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
		conns = nil
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-r.closing:
		case <-closed:
		}
		stop()
	}()
	defer func() {
		close(closed)
		wg.Wait()
	}()
	for {
		c, err := lis.Accept(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-r.closing:
				return nil
			default:
				return fmt.Errorf("allreduce: serve %s: %w", r.cfg.Self, err)
			}
		}
		mu.Lock()
		if conns == nil {
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Accept(c.Remote(), memnetInbound{c})
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}
