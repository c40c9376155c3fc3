package model

import (
	"fmt"
	"slices"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// program is a network's forward pass as the list of its ops' kernels — the
// functions the tape machine calls, so both paths compute the same values —
// run in order without a machine: no gradient nodes, no tape, and each
// activation in a buffer that returns to a pool once its last reader has run,
// so a pass touches a few activations' worth of memory instead of all of
// them. Every buffer is allocated when the program is built; a run allocates
// none.
type program[T Float] struct {
	feed[T]
	steps []pstep[T]
	out   []T // the raw output o (s = o/σ), graph layout
	// held is the number of values in activation buffers (the outputs of
	// all steps add up to several times more).
	held int
}

// pstep is one op: run(out, in) as the tape machine would call it.
type pstep[T Float] struct {
	run func(out []T, in [][]T)
	out []T
	in  [][]T
}

// newProgram builds the forward pass for batch samples, each op splitting
// the batch over nw goroutines.
func newProgram[T Float](n *NetOf[T], batch, nw int) (*program[T], error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	b := newBuilder(n, batch, false)
	b.ws = newWorkspace[T](nw)
	p := &program[T]{feed: feed[T]{net: n, batch: batch}}
	o, err := b.forward(&p.feed)
	if err != nil {
		return nil, err
	}
	order := postOrder(b.g, o)
	// Where each node's value lives: a fixed slice (inputs, parameters) or
	// the output of step k.
	type slot struct {
		fixed []T
		step  int
		last  int // index in order of the last step reading it
	}
	slots := make(map[int64]*slot, len(order))
	for i, nd := range order {
		s := &slot{step: -1, last: -1}
		if op, ok := nd.Op().(*node[T]); ok {
			if op.out == nil {
				return nil, fmt.Errorf("model: forward: %s has a scalar output", op.name)
			}
			s.step = i
		} else {
			v, ok := nd.Value().(*tensor.Dense)
			if !ok {
				return nil, fmt.Errorf("model: forward: node %s is neither an op of this package nor a tensor", nd.Name())
			}
			if s.fixed, ok = v.Data().([]T); !ok {
				return nil, fmt.Errorf("model: forward: node %s holds %v", nd.Name(), v.Dtype())
			}
		}
		slots[nd.ID()] = s
		for _, c := range children(b.g, nd) {
			slots[c.ID()].last = i
		}
	}
	var free [][]T // pooled buffers, each at its full capacity
	outs := make([][]T, len(order))
	for i, nd := range order {
		op, ok := nd.Op().(*node[T])
		if !ok {
			continue
		}
		size := op.out.Shape().TotalSize()
		// Take the smallest free buffer that fits, before releasing the
		// inputs: no op may write over what it reads.
		best := -1
		for j, f := range free {
			if len(f) >= size && (best < 0 || len(f) < len(free[best])) {
				best = j
			}
		}
		if best >= 0 {
			outs[i] = free[best][:size]
			free = slices.Delete(free, best, best+1)
		} else {
			outs[i] = make([]T, size)
			p.held += size
		}
		st := pstep[T]{run: op.run, out: outs[i]}
		kids := children(b.g, nd)
		if len(kids) != op.Arity() {
			return nil, fmt.Errorf("model: forward: %s has %d inputs, want %d", op.name, len(kids), op.Arity())
		}
		for j, c := range kids {
			s := slots[c.ID()]
			if s.step < 0 {
				st.in = append(st.in, s.fixed)
				continue
			}
			st.in = append(st.in, outs[s.step])
			if s.last == i && !slices.ContainsFunc(kids[:j], func(k *gorgonia.Node) bool { return k == c }) {
				free = append(free, outs[s.step][:cap(outs[s.step])])
			}
		}
		p.steps = append(p.steps, st)
	}
	last := slots[o.ID()]
	if last.step < 0 {
		return nil, fmt.Errorf("model: forward: the output is not computed")
	}
	p.out = outs[last.step]
	return p, nil
}

// run computes p.out from the inputs in p.feed.
func (p *program[T]) run() {
	for i := range p.steps {
		s := &p.steps[i]
		s.run(s.out, s.in)
	}
}

// children are nd's inputs in the op's argument order.
func children(g *gorgonia.ExprGraph, nd *gorgonia.Node) []*gorgonia.Node {
	var out []*gorgonia.Node
	for it := g.From(nd.ID()); it.Next(); {
		out = append(out, it.Node().(*gorgonia.Node))
	}
	return out
}

// postOrder lists the nodes o depends on, each after its inputs.
func postOrder(g *gorgonia.ExprGraph, o *gorgonia.Node) []*gorgonia.Node {
	var order []*gorgonia.Node
	seen := map[int64]bool{}
	var visit func(*gorgonia.Node)
	visit = func(nd *gorgonia.Node) {
		if seen[nd.ID()] {
			return
		}
		seen[nd.ID()] = true
		for _, c := range children(g, nd) {
			visit(c)
		}
		order = append(order, nd)
	}
	visit(o)
	return order
}
