package coordinator

import (
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/ncsn/ncsn/coordinator/membership"
	"github.com/ncsn/ncsn/internal/cluster"
)

// gossipEvent is a node memberlist saw join, or leave or die.
type gossipEvent struct {
	name string
	meta []byte
	gone bool
}

// gossipQueue is the coordinator's memberlist.EventDelegate. memberlist calls
// it holding its own locks, so it only enqueues: it never blocks and never
// takes the protocol lock. Run's gossip goroutine hands the events to the core.
type gossipQueue struct {
	mu     sync.Mutex
	events []gossipEvent
	wake   chan struct{} // capacity 1
}

func newGossipQueue() *gossipQueue { return &gossipQueue{wake: make(chan struct{}, 1)} }

func (q *gossipQueue) push(e gossipEvent) {
	q.mu.Lock()
	q.events = append(q.events, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *gossipQueue) take() []gossipEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.events
	q.events = nil
	return e
}

func (q *gossipQueue) NotifyJoin(n *memberlist.Node) {
	q.push(gossipEvent{name: n.Name, meta: append([]byte(nil), n.Meta...)})
}

func (q *gossipQueue) NotifyLeave(n *memberlist.Node) { q.push(gossipEvent{name: n.Name, gone: true}) }

func (q *gossipQueue) NotifyUpdate(*memberlist.Node) {}

// followGossip is Run's gossip goroutine: it turns deaths and leaves into
// removals until gossip is shut down.
func (s *Server) followGossip() {
	for {
		select {
		case <-s.gossip.wake:
		case <-s.stopped:
			return
		}
		for _, e := range s.gossip.take() {
			if !e.gone {
				meta, _ := cluster.ParseMeta(e.meta)
				s.log.Debug("gossip join", "node", e.name, "role", meta.Role, "addr", meta.Addr)
				continue
			}
			s.step(func(c *membership.Core) { c.NodeGone(e.name) })
		}
	}
}
