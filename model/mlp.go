package model

import (
	"fmt"

	"gorgonia.org/gorgonia"
)

// mlpSpecs: input [x, log σ] → (Linear → softplus) × depth → Linear dim, named
// like torch_ref.py's nn.Sequential ("f.0", "f.2", …).
func mlpSpecs(c Config, dim int) []pspec {
	var s []pspec
	in := dim + 1
	for i := 0; i < c.Depth; i++ {
		s = append(s, linearSpecs(fmt.Sprintf("f.%d", 2*i), in, c.Hidden)...)
		in = c.Hidden
	}
	return append(s, linearSpecs(fmt.Sprintf("f.%d", 2*c.Depth), in, dim)...)
}

// mlpForward builds the mlp on input rows [x̃_b, log σ_b] (batch × dim+1) and
// returns its raw output o (batch × dim), s = o/σ.
func (b *builder[T]) mlpForward(in *gorgonia.Node) (*gorgonia.Node, error) {
	c, dim := b.net.cfg, b.net.dim
	h := in
	var err error
	for i := 0; i < c.Depth; i++ {
		name := fmt.Sprintf("f.%d", 2*i)
		if h, err = b.linear(name, h, c.Hidden, i > 0); err != nil {
			return nil, err
		}
		if h, err = b.softplus(fmt.Sprintf("f.%d", 2*i+1), h); err != nil {
			return nil, err
		}
	}
	return b.linear(fmt.Sprintf("f.%d", 2*c.Depth), h, dim, c.Depth > 0)
}
