package model

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"gorgonia.org/gorgonia"
)

// ErrClosed is returned by Run and Score after Close.
var ErrClosed = errors.New("model: closed")

// feed holds the data inputs of one graph: the network input (NHWC images, or
// mlp rows [x̃, log σ]), log σ for the U-Net's embedding, and z.
type feed[T Float] struct {
	net   *NetOf[T]
	batch int
	xin   []T
	lsig  []T
	zin   []T
}

// forward adds the data inputs and the network, returning its raw output o
// (s = o/σ) in the layout of xin's images (NHWC) or rows.
func (b *builder[T]) forward(d *feed[T]) (*gorgonia.Node, error) {
	n, bs := b.net, b.batch
	if n.cfg.Arch == "mlp" {
		d.xin = make([]T, bs*(n.dim+1))
		return b.mlpForward(b.input("input", d.xin, bs, n.dim+1))
	}
	c, h, w := n.shape[0], n.shape[1], n.shape[2]
	d.xin, d.lsig = make([]T, bs*n.dim), make([]T, bs)
	return b.unetForward(b.input("x", d.xin, bs, h, w, c), b.input("logsigma", d.lsig, bs, 1))
}

// outShape is the raw output's shape in the graph.
func (d *feed[T]) outShape() []int {
	n := d.net
	if n.cfg.Arch == "mlp" {
		return []int{d.batch, n.dim}
	}
	return []int{d.batch, n.shape[1], n.shape[2], n.shape[0]}
}

// toGraph converts per-sample [C, H, W] data (any number of samples) to the
// graph's NHWC (a copy for flat data and C = 1).
func (d *feed[T]) toGraph(dst, src []T) {
	n := d.net
	if n.cfg.Arch == "mlp" || n.shape[0] == 1 {
		copy(dst, src)
		return
	}
	c, hw := n.shape[0], n.shape[1]*n.shape[2]
	for s := 0; s < len(src)/n.dim; s++ {
		o := s * c * hw
		for ch := 0; ch < c; ch++ {
			for p := 0; p < hw; p++ {
				dst[o+p*c+ch] = src[o+ch*hw+p]
			}
		}
	}
}

// fromGraph is toGraph's inverse, dividing sample s by div[s].
func (d *feed[T]) fromGraph(dst, src, div []T) {
	n := d.net
	dim := n.dim
	c := 1
	if n.cfg.Arch == "unet" {
		c = n.shape[0]
	}
	hw := dim / c
	for s := 0; s < d.batch; s++ {
		o, r := s*dim, 1/div[s]
		for ch := 0; ch < c; ch++ {
			for p := 0; p < hw; p++ {
				dst[o+ch*hw+p] = src[o+p*c+ch] * r
			}
		}
	}
}

// fill sets the graph's inputs for data x at noise levels sigma.
func (d *feed[T]) fill(x, sigma []T) {
	n := d.net
	if n.cfg.Arch == "mlp" {
		dim := n.dim
		for s := 0; s < d.batch; s++ {
			row := d.xin[s*(dim+1) : (s+1)*(dim+1)]
			copy(row, x[s*dim:(s+1)*dim])
			row[dim] = T(math.Log(float64(sigma[s])))
		}
		return
	}
	d.toGraph(d.xin, x)
	for s, v := range sigma {
		d.lsig[s] = T(math.Log(float64(v)))
	}
}

// wantLen is a slice a batch entry point takes and the number of values it must hold.
type wantLen[T Float] struct {
	what string
	v    []T
	n    int
}

// checkLens reports the first of args whose length is not what the batch needs; who, if
// not empty, ends in ": ".
func checkLens[T Float](who string, batch int, args ...wantLen[T]) error {
	for _, a := range args {
		if len(a.v) != a.n {
			return fmt.Errorf("model: %s%s has %d values, want %d (batch %d)", who, a.what, len(a.v), a.n, batch)
		}
	}
	return nil
}

// GradOf computes DSM losses and parameter gradients for one batch size on
// one gorgonia graph and tape machine, reused by every Run. Run calls on one
// GradOf are serialised; different GradOf and ScorerOf values of the same
// network may run concurrently as long as nothing writes Params().Data
// meanwhile (each owns all its buffers and only reads the parameters).
type GradOf[T Float] struct {
	mu sync.Mutex
	feed[T]
	vm     gorgonia.VM
	xt     []T // x + σz, caller layout
	grad   []T
	losses []T
	// power is p of the loss weight σ^p; weights holds σ_b^(p−2) (all 1 for
	// p = 2, the unweighted ½‖o + z‖²).
	power   float64
	weights []T
}

// newGrad builds the DSM loss and gradient graph for batch samples, the loss
// weighted by λ(σ) = σ^power (2: NCSN's).
func (n *NetOf[T]) newGrad(batch int, power float64) (*GradOf[T], error) {
	return n.newGradNW(batch, power, workers(batch))
}

// newGradNW is newGrad with each op splitting the batch over nw goroutines.
func (n *NetOf[T]) newGradNW(batch int, power float64, nw int) (*GradOf[T], error) {
	if batch < 1 {
		return nil, fmt.Errorf("model: batch %d, want >= 1", batch)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	b := newBuilder(n, batch, true)
	b.ws = newWorkspace[T](nw)
	g := &GradOf[T]{feed: feed[T]{net: n, batch: batch}, grad: b.grad, losses: make([]T, batch), xt: make([]T, batch*n.dim),
		power: power, weights: make([]T, batch)}
	o, err := b.forward(&g.feed)
	if err != nil {
		return nil, err
	}
	g.zin = make([]T, batch*n.dim)
	loss, err := b.dsmLoss(o, b.input("z", g.zin, g.outShape()...), g.weights, g.losses)
	if err != nil {
		return nil, err
	}
	if _, err := gorgonia.Grad(loss, b.params...); err != nil {
		return nil, fmt.Errorf("model: gradient graph: %w", err)
	}
	g.vm = gorgonia.NewTapeMachine(b.g)
	return g, nil
}

// Run computes per-sample losses l_b = ½‖σ_b·s(x_b + σ_b z_b, σ_b) + z_b‖² into
// losses and the sum over the batch of ∇_θ l_b into grad (len(Params().Data)).
// Built with a loss weight σ^p, l_b is σ_b^(p−2)·½‖σ_b·s + z_b‖² = σ_b^p·½‖s + z_b/σ_b‖².
// x and z are batch × D in the data's own layout, sigma one value per sample.
func (g *GradOf[T]) Run(x, z, sigma, grad, losses []T) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := checkLens("", g.batch, wantLen[T]{"grad", grad, len(g.grad)}); err != nil {
		return err
	}
	if err := g.compute(x, z, sigma, losses); err != nil {
		return err
	}
	copy(grad, g.grad)
	return nil
}

// compute is Run leaving the gradient sum in g.grad, for callers that read it in
// place (gradParts); the caller serialises calls.
func (g *GradOf[T]) compute(x, z, sigma, losses []T) error {
	if g.vm == nil {
		return ErrClosed
	}
	dim := g.net.dim
	if err := checkLens("", g.batch, wantLen[T]{"x", x, g.batch * dim}, wantLen[T]{"z", z, g.batch * dim}, wantLen[T]{"sigma", sigma, g.batch}, wantLen[T]{"losses", losses, g.batch}); err != nil {
		return err
	}
	for s := 0; s < g.batch; s++ {
		sg := sigma[s]
		for i := s * dim; i < (s+1)*dim; i++ {
			g.xt[i] = x[i] + sg*z[i]
		}
		g.weights[s] = T(lossWeight(float64(sg), g.power, 2))
	}
	g.fill(g.xt, sigma)
	g.toGraph(g.zin, z)
	err := g.vm.RunAll()
	g.vm.Reset()
	if err != nil {
		return fmt.Errorf("model: grad: %w", err)
	}
	copy(losses, g.losses)
	return nil
}

// Close releases the graph; it is idempotent.
func (g *GradOf[T]) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.vm == nil {
		return nil
	}
	err := g.vm.Close()
	g.vm, g.grad, g.xin, g.zin, g.xt = nil, nil, nil, nil, nil
	return err
}

// ScorerOf evaluates s(x, σ) for one batch size by the forward-only
// program: no tape, no saved activations, every buffer allocated once. The
// batch is cut into one contiguous part per core, each run through the whole
// network by its own goroutine and program: every op is spread across the
// cores, including those whose kernels run on one (the mlp's softplus, the
// σ embedding), with one join per pass instead of one per op. Score calls
// on one ScorerOf are serialised; see GradOf for concurrency.
type ScorerOf[T Float] struct {
	mu    sync.Mutex
	batch int
	dim   int
	parts []*program[T]
	cut   []int // part i is samples [cut[i], cut[i+1])
}

// Scorer is the float32 score evaluation used by samplers.
type Scorer = ScorerOf[float32]

// NewScorer builds the forward pass for batch samples.
func (n *NetOf[T]) NewScorer(batch int) (*ScorerOf[T], error) {
	return n.newScorer(batch, workers(batch), 1)
}

// newScorer splits the batch into parts programs whose ops each use nw goroutines.
func (n *NetOf[T]) newScorer(batch, parts, nw int) (*ScorerOf[T], error) {
	if batch < 1 {
		return nil, fmt.Errorf("model: batch %d, want >= 1", batch)
	}
	s := &ScorerOf[T]{batch: batch, dim: n.dim, cut: cutBatch(batch, parts)}
	for i := range len(s.cut) - 1 {
		p, err := newProgram(n, s.cut[i+1]-s.cut[i], nw)
		if err != nil {
			return nil, err
		}
		s.parts = append(s.parts, p)
	}
	return s, nil
}

// cutBatch cuts batch samples into k contiguous parts (1 to batch of them) of sizes
// differing by at most one: part i is [cut[i], cut[i+1]).
func cutBatch(batch, k int) []int {
	k = max(1, min(k, batch))
	cut := make([]int, k+1)
	for i := range cut {
		cut[i] = i * batch / k
	}
	return cut
}

// Score sets out = s(x, σ) for batch samples (x, out batch × D; sigma per sample).
func (s *ScorerOf[T]) Score(x, sigma, out []T) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parts == nil {
		return ErrClosed
	}
	if err := checkLens("", s.batch, wantLen[T]{"x", x, s.batch * s.dim}, wantLen[T]{"sigma", sigma, s.batch}, wantLen[T]{"out", out, s.batch * s.dim}); err != nil {
		return err
	}
	parallel(len(s.parts), len(s.parts), func(i, _, _ int) {
		p, lo, hi := s.parts[i], s.cut[i], s.cut[i+1]
		p.fill(x[lo*s.dim:hi*s.dim], sigma[lo:hi])
		p.run()
		p.fromGraph(out[lo*s.dim:hi*s.dim], p.out, sigma[lo:hi])
	})
	return nil
}

// Close releases the buffers; it is idempotent.
func (s *ScorerOf[T]) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts = nil
	return nil
}
