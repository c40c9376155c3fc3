package model

import (
	"gorgonia.org/gorgonia"
)

// unetSpecs lists the reference U-Net's parameters in torch_ref.py's order
// (its named_parameters), so checkpoints line up with PyTorch's state_dict.
func unetSpecs(c Config, cin int) []pspec {
	c1, c2, c3, e := c.Channels[0], c.Channels[1], c.Channels[2], c.Emb
	var s []pspec
	s = append(s, linearSpecs("emb.0", 1, e)...)
	s = append(s, linearSpecs("emb.2", e, e)...)
	s = append(s, convSpecs("cin", cin, c1)...)
	res := func(name string, ch int) {
		s = append(s, gnSpecs(name+".n1", ch)...)
		s = append(s, gnSpecs(name+".n2", ch)...)
		s = append(s, convSpecs(name+".c1", ch, ch)...)
		s = append(s, convSpecs(name+".c2", ch, ch)...)
		s = append(s, linearSpecs(name+".e", e, ch)...)
	}
	res("r1", c1)
	s = append(s, convSpecs("d1", c1, c2)...)
	res("r2", c2)
	s = append(s, convSpecs("d2", c2, c3)...)
	res("m1", c3)
	res("m2", c3)
	s = append(s, convSpecs("u2c", c3+c2, c2)...)
	res("r2u", c2)
	s = append(s, convSpecs("u1c", c2+c1, c1)...)
	res("r1u", c1)
	s = append(s, gnSpecs("nout", c1)...)
	return append(s, convSpecs("cout", c1, cin)...)
}

// res adds the residual block: h = Conv(SiLU(GN(x))) + Linear(e);
// h = Conv(SiLU(GN(h))); x + h. The embedding projection rides in the first
// conv's per-sample bias and the residual in the second conv's output.
func (b *builder[T]) res(name string, x, e *gorgonia.Node) (*gorgonia.Node, error) {
	ch, groups := x.Shape()[3], b.net.cfg.Groups
	p, err := b.linear(name+".e", e, ch, true)
	if err != nil {
		return nil, err
	}
	h, err := b.gnsilu(name+".n1", x, groups)
	if err != nil {
		return nil, err
	}
	if h, err = b.conv(name+".c1", h, ch, 1, p, nil, true); err != nil {
		return nil, err
	}
	if h, err = b.gnsilu(name+".n2", h, groups); err != nil {
		return nil, err
	}
	return b.conv(name+".c2", h, ch, 1, nil, x, true)
}

// unetForward builds the U-Net on NHWC images x [B, H, W, C] and log σ [B, 1],
// returning its raw output o [B, H, W, C], s = o/σ.
func (b *builder[T]) unetForward(x, logSigma *gorgonia.Node) (*gorgonia.Node, error) {
	c := b.net.cfg
	c1, c2, c3, emb := c.Channels[0], c.Channels[1], c.Channels[2], c.Emb
	cin := x.Shape()[3]
	e, err := b.linear("emb.0", logSigma, emb, false)
	if err != nil {
		return nil, err
	}
	if e, err = b.silu("emb.1", e); err != nil {
		return nil, err
	}
	if e, err = b.linear("emb.2", e, emb, true); err != nil {
		return nil, err
	}
	if e, err = b.silu("emb.3", e); err != nil {
		return nil, err
	}
	h, err := b.conv("cin", x, c1, 1, nil, nil, false)
	if err != nil {
		return nil, err
	}
	h1, err := b.res("r1", h, e)
	if err != nil {
		return nil, err
	}
	if h, err = b.conv("d1", h1, c2, 2, nil, nil, true); err != nil {
		return nil, err
	}
	h2, err := b.res("r2", h, e)
	if err != nil {
		return nil, err
	}
	if h, err = b.conv("d2", h2, c3, 2, nil, nil, true); err != nil {
		return nil, err
	}
	if h, err = b.res("m1", h, e); err != nil {
		return nil, err
	}
	if h, err = b.res("m2", h, e); err != nil {
		return nil, err
	}
	if h, err = b.upcat("up2", h, h2); err != nil {
		return nil, err
	}
	if h, err = b.conv("u2c", h, c2, 1, nil, nil, true); err != nil {
		return nil, err
	}
	if h, err = b.res("r2u", h, e); err != nil {
		return nil, err
	}
	if h, err = b.upcat("up1", h, h1); err != nil {
		return nil, err
	}
	if h, err = b.conv("u1c", h, c1, 1, nil, nil, true); err != nil {
		return nil, err
	}
	if h, err = b.res("r1u", h, e); err != nil {
		return nil, err
	}
	if h, err = b.gnsilu("nout", h, c.Groups); err != nil {
		return nil, err
	}
	return b.conv("cout", h, cin, 1, nil, nil, true)
}
