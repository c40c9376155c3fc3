package model

import (
	"errors"
	"fmt"
)

// gradParts is DSM's gradient for one batch size cut into one contiguous part
// per core, each a GradOf of its own whose ops run on one goroutine: every op
// is spread across the cores, the small ones too, with one join per step
// instead of one per op (as ScorerOf does for sampling). The parts' gradient
// sums are added in part order, read where each graph left them, so a step's
// bits depend only on the batch and the number of parts.
type gradParts[T Float] struct {
	dim   int
	batch int
	parts []*GradOf[T]
	cut   []int // part i is samples [cut[i], cut[i+1])
	errs  []error
}

// newGradParts cuts batch into k parts (at most batch).
func (n *NetOf[T]) newGradParts(batch int, power float64, k int) (*gradParts[T], error) {
	if batch < 1 {
		return nil, fmt.Errorf("model: batch %d, want >= 1", batch)
	}
	cut := cutBatch(batch, k)
	k = len(cut) - 1
	gp := &gradParts[T]{dim: n.dim, batch: batch, cut: cut, errs: make([]error, k)}
	for i := range k {
		nw := 1
		if k == 1 {
			nw = workers(batch)
		}
		g, err := n.newGradNW(cut[i+1]-cut[i], power, nw)
		if err != nil {
			gp.close()
			return nil, err
		}
		gp.parts = append(gp.parts, g)
	}
	return gp, nil
}

func (gp *gradParts[T]) run(x, z, sigma, grad, losses []T) error {
	d := gp.dim
	if err := checkLens("", gp.batch, wantLen[T]{"x", x, gp.batch * d}, wantLen[T]{"z", z, gp.batch * d}, wantLen[T]{"sigma", sigma, gp.batch},
		wantLen[T]{"grad", grad, len(gp.parts[0].grad)}, wantLen[T]{"losses", losses, gp.batch}); err != nil {
		return err
	}
	parallel(len(gp.parts), len(gp.parts), func(i, _, _ int) {
		g, lo, hi := gp.parts[i], gp.cut[i], gp.cut[i+1]
		gp.errs[i] = g.compute(x[lo*d:hi*d], z[lo*d:hi*d], sigma[lo:hi], losses[lo:hi])
	})
	if err := errors.Join(gp.errs...); err != nil {
		return err
	}
	// Each core sums a range of the parameters over the parts, in part order.
	parallel(len(grad), len(gp.parts), func(_, lo, hi int) {
		copy(grad[lo:hi], gp.parts[0].grad[lo:hi])
		for _, g := range gp.parts[1:] {
			addTo(grad[lo:hi], g.grad[lo:hi])
		}
	})
	return nil
}

func (gp *gradParts[T]) close() error {
	var errs []error
	for _, g := range gp.parts {
		errs = append(errs, g.Close())
	}
	gp.parts = nil
	return errors.Join(errs...)
}
