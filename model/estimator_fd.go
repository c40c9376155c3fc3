package model

import (
	"fmt"
	"math"

	"gorgonia.org/gorgonia"
)

// fdGrad is FD-SSM on the network's gorgonia graph: one graph of 2·P rows for
// the P = batch·n_particles pairs x̃ ± h·v, so only forward passes of the
// network are differentiated (fdssmLoss). It works for every architecture.
type fdGrad[T Float] struct {
	feed[T]
	vm        gorgonia.VM
	samples   int
	particles int
	eps       float64
	power     float64
	rows      []T // x̃ + h·v for pair r at row r, x̃ − h·v at row P + r; caller layout
	rowSigma  []T
	vin       []T // v in the graph's layout
	a, c      []T // per-pair coefficients of fdssmLoss
	pairs     []T // per-pair losses
	grad      []T
}

func (n *NetOf[T]) newFDGrad(batch int, loss LossConfig) (*fdGrad[T], error) {
	P := batch * loss.Particles
	buildMu.Lock()
	defer buildMu.Unlock()
	b := newBuilder(n, 2*P, true)
	f := &fdGrad[T]{
		feed: feed[T]{net: n, batch: 2 * P}, samples: batch, particles: loss.Particles, eps: loss.FDEps, power: loss.AnnealPower,
		rows: make([]T, 2*P*n.dim), rowSigma: make([]T, 2*P), vin: make([]T, P*n.dim),
		a: make([]T, P), c: make([]T, P), pairs: make([]T, P), grad: b.grad,
	}
	o, err := b.forward(&f.feed)
	if err != nil {
		return nil, err
	}
	vshape := f.outShape()
	vshape[0] = P
	l, err := b.fdssmLoss(o, b.input("v", f.vin, vshape...), f.a, f.c, f.pairs)
	if err != nil {
		return nil, err
	}
	if _, err := gorgonia.Grad(l, b.params...); err != nil {
		return nil, fmt.Errorf("model: fd_ssm gradient graph: %w", err)
	}
	f.vm = gorgonia.NewTapeMachine(b.g)
	return f, nil
}

func (f *fdGrad[T]) run(x, z, v, sigma, grad, losses []T) error {
	dim, B, M := f.net.dim, f.samples, f.particles
	P := B * M
	if err := checkLens("fd_ssm: ", B, wantLen[T]{"x", x, B * dim}, wantLen[T]{"z", z, B * dim}, wantLen[T]{"sigma", sigma, B},
		wantLen[T]{"grad", grad, len(f.grad)}, wantLen[T]{"losses", losses, B}); err != nil {
		return err
	}
	for b := 0; b < B; b++ {
		sg := sigma[b]
		s := float64(sg)
		xb, zb := x[b*dim:(b+1)*dim], z[b*dim:(b+1)*dim]
		for m := 0; m < M; m++ {
			r := b*M + m
			vr := v[r*dim : (r+1)*dim]
			var nv float64
			for _, e := range vr {
				nv += float64(e) * float64(e)
			}
			// A zero direction has a zero loss whatever h is.
			nv = math.Sqrt(nv)
			if nv == 0 {
				nv = 1
			}
			h := f.eps * s / nv
			th := T(h)
			plus, minus := f.rows[r*dim:(r+1)*dim], f.rows[(P+r)*dim:(P+r+1)*dim]
			for j, e := range vr {
				xt := xb[j] + sg*zb[j]
				plus[j], minus[j] = xt+th*e, xt-th*e
			}
			f.rowSigma[r], f.rowSigma[P+r] = sg, sg
			f.a[r] = T(lossWeight(s, f.power, 1) / (2 * h * float64(M)))
			f.c[r] = T(lossWeight(s, f.power, 2) / (8 * float64(M)))
		}
	}
	f.fill(f.rows, f.rowSigma)
	f.toGraph(f.vin, v)
	err := f.vm.RunAll()
	f.vm.Reset()
	if err != nil {
		return fmt.Errorf("model: fd_ssm: %w", err)
	}
	copy(grad, f.grad)
	for b := 0; b < B; b++ {
		var l T
		for _, p := range f.pairs[b*M : (b+1)*M] {
			l += p
		}
		losses[b] = l
	}
	return nil
}

func (f *fdGrad[T]) close() error {
	if f.vm == nil {
		return nil
	}
	err := f.vm.Close()
	f.vm = nil
	return err
}
