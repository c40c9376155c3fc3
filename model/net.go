// Package model holds the score networks (on gorgonia, with this package's own
// ops), the σ schedule, the DSM loss, the optimizer, the sampler and
// checkpoints.
package model

import (
	"fmt"
	"slices"
	"sync"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Config selects and sizes the score network (YAML section "model").
type Config struct {
	Arch     string `yaml:"arch"`               // "mlp" | "unet"
	Hidden   int    `yaml:"hidden,omitempty"`   // mlp width (default 128)
	Depth    int    `yaml:"depth,omitempty"`    // mlp hidden layers (default 3)
	Channels []int  `yaml:"channels,omitempty"` // unet widths (default [32, 64, 128])
	Emb      int    `yaml:"emb,omitempty"`      // unet σ-embedding width (default 64)
	Groups   int    `yaml:"groups,omitempty"`   // unet GroupNorm groups (default 8)
}

// WithDefaults fills unset sizes with the reference architecture's.
func (c Config) WithDefaults() Config {
	switch c.Arch {
	case "mlp":
		if c.Hidden == 0 {
			c.Hidden = 128
		}
		if c.Depth == 0 {
			c.Depth = 3
		}
	case "unet":
		if len(c.Channels) == 0 {
			c.Channels = []int{32, 64, 128}
		} else {
			c.Channels = slices.Clone(c.Channels)
		}
		if c.Emb == 0 {
			c.Emb = 64
		}
		if c.Groups == 0 {
			c.Groups = 8
		}
	}
	return c
}

// Validate checks the (defaulted) config against the per-example data shape:
// [D] for the mlp, [C, H, W] with H and W divisible by 4 for the unet.
func (c Config) Validate(shape []int) error {
	for _, d := range shape {
		if d < 1 {
			return fmt.Errorf("model: data shape %v has an empty dimension", shape)
		}
	}
	switch c.Arch {
	case "mlp":
		switch {
		case len(shape) != 1:
			return fmt.Errorf("model.arch: mlp needs flat data of shape [D], got %v", shape)
		case c.Hidden < 1:
			return fmt.Errorf("model.hidden: %d, want >= 1", c.Hidden)
		case c.Depth < 1:
			return fmt.Errorf("model.depth: %d, want >= 1", c.Depth)
		}
	case "unet":
		if len(shape) != 3 {
			return fmt.Errorf("model.arch: unet needs images of shape [C, H, W], got %v", shape)
		}
		if shape[1]%4 != 0 || shape[2]%4 != 0 {
			return fmt.Errorf("model.arch: unet needs H and W divisible by 4, got %dx%d", shape[1], shape[2])
		}
		if len(c.Channels) != 3 {
			return fmt.Errorf("model.channels: %v, want 3 widths (one per resolution)", c.Channels)
		}
		if c.Groups < 1 {
			return fmt.Errorf("model.groups: %d, want >= 1", c.Groups)
		}
		for _, ch := range c.Channels {
			if ch < 1 {
				return fmt.Errorf("model.channels: %v, want widths >= 1", c.Channels)
			}
			if ch%min(c.Groups, ch) != 0 {
				return fmt.Errorf("model.channels: width %d is not divisible by model.groups %d", ch, c.Groups)
			}
		}
		if c.Emb < 1 {
			return fmt.Errorf("model.emb: %d, want >= 1", c.Emb)
		}
	default:
		return fmt.Errorf("model.arch: %q, want mlp or unet", c.Arch)
	}
	return nil
}

// NetOf is a score network s(x, σ) = net(x, log σ)/σ with its parameters.
type NetOf[T Float] struct {
	cfg   Config
	shape []int // per-example data shape
	dim   int   // prod(shape)
	p     *ParamsOf[T]
	specs []pspec
	conv  convPolicy // NCSN_CONV when built
}

// Net is the float32 network used for training and sampling.
type Net = NetOf[float32]

// Net64 is the same network in float64, for gradient checks.
type Net64 = NetOf[float64]

// New builds a float32 network for per-example data of the given shape, with
// zero parameters (call Init or load a checkpoint).
func New(cfg Config, shape []int) (*Net, error) { return newNet[float32](cfg, shape) }

// New64 is New in float64.
func New64(cfg Config, shape []int) (*Net64, error) { return newNet[float64](cfg, shape) }

func newNet[T Float](cfg Config, shape []int) (*NetOf[T], error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(shape); err != nil {
		return nil, err
	}
	conv, err := convPolicyFromEnv()
	if err != nil {
		return nil, err
	}
	n := &NetOf[T]{cfg: cfg, shape: slices.Clone(shape), dim: prod(shape), conv: conv}
	var specs []pspec
	if cfg.Arch == "mlp" {
		specs = mlpSpecs(cfg, shape[0])
	} else {
		specs = unetSpecs(cfg, shape[0])
	}
	n.p, n.specs = layout[T](specs)
	return n, nil
}

// Config returns the defaulted configuration.
func (n *NetOf[T]) Config() Config { return n.cfg }

// Shape returns the per-example data shape.
func (n *NetOf[T]) Shape() []int { return slices.Clone(n.shape) }

// Params returns the network's one parameter buffer. Grad and Scorer read it
// on every call; it may be changed in place between calls.
func (n *NetOf[T]) Params() *ParamsOf[T] { return n.p }

// Init sets PyTorch's default initialisation, deterministically from seed.
func (n *NetOf[T]) Init(seed uint64) { initParams(n.p, n.specs, seed) }

// buildMu serialises graph construction: gorgonia's Grad adds a shared
// package-level constant node to each graph.
var buildMu sync.Mutex

// builder assembles one graph of a network for one batch size.
type builder[T Float] struct {
	net    *NetOf[T]
	g      *gorgonia.ExprGraph
	batch  int
	params []*gorgonia.Node
	grad   []T // flat gradient buffer; nil when no gradient is built
	ws     *workspace[T]
	// convs, if not nil, receives each convolution layer as it is added.
	convs func(convLayer)
}

func newBuilder[T Float](n *NetOf[T], batch int, withGrad bool) *builder[T] {
	b := &builder[T]{net: n, g: gorgonia.NewGraph(), batch: batch, ws: newWorkspace[T](workers(batch))}
	if withGrad {
		b.grad = make([]T, len(n.p.Data))
	}
	p := n.p
	for i, name := range p.Names {
		sh := p.Shapes[i]
		t := tensor.New(tensor.WithShape(sh...), tensor.WithBacking(p.Data[p.Offsets[i]:p.Offsets[i]+prod(sh)]))
		b.params = append(b.params, gorgonia.NewTensor(b.g, dtypeOf[T](), len(sh), gorgonia.WithShape(sh...), gorgonia.WithName(name), gorgonia.WithValue(t)))
	}
	return b
}

// input adds a data node backed by buf.
func (b *builder[T]) input(name string, buf []T, shape ...int) *gorgonia.Node {
	t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(buf))
	return gorgonia.NewTensor(b.g, dtypeOf[T](), len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(name), gorgonia.WithValue(t))
}

// param returns the node of a parameter; a name missing from the specs is a
// bug in this package.
func (b *builder[T]) param(name string) *gorgonia.Node {
	i := b.net.p.Index(name)
	if i < 0 {
		panic("model: graph uses undeclared parameter " + name)
	}
	return b.params[i]
}

// gradOf is the parameter's slice of the flat gradient buffer (nil without one).
func (b *builder[T]) gradOf(name string) []T {
	if b.grad == nil {
		return nil
	}
	p := b.net.p
	i := p.Index(name)
	if i < 0 {
		panic("model: gradient of undeclared parameter " + name)
	}
	return b.grad[p.Offsets[i] : p.Offsets[i]+prod(p.Shapes[i])]
}

// workspace is scratch memory shared by the ops of one graph, one buffer per
// worker goroutine: the ops of a graph run one after another.
type workspace[T Float] struct {
	nw   int
	need int
	bufs [][]T
}

func newWorkspace[T Float](nw int) *workspace[T] {
	return &workspace[T]{nw: nw, bufs: make([][]T, nw)}
}

func (w *workspace[T]) reserve(n int) {
	if n > w.need {
		w.need = n
	}
}

// get returns worker i's scratch of at least n values.
func (w *workspace[T]) get(i, n int) []T {
	if len(w.bufs[i]) < n {
		// Only the first run allocates: reserve saw every size at build time.
		w.bufs[i] = make([]T, max(n, w.need))
	}
	return w.bufs[i][:n]
}
