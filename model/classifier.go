package model

import (
	"fmt"
	"slices"
	"sync"

	"gorgonia.org/gorgonia"
)

// ClassifierConfig sizes the image classifier whose penultimate layer is the
// feature space of ncsn's FID and KID.
type ClassifierConfig struct {
	// Widths are the channels at full, half and quarter resolution.
	Widths []int
	// Groups is the number of GroupNorm groups.
	Groups int
	// Classes is the number of labels.
	Classes int
}

// Validate checks the config against the per-example image shape [C, H, W].
func (c ClassifierConfig) Validate(shape []int) error {
	if len(shape) != 3 || shape[0] < 1 || shape[1] < 4 || shape[2] < 4 {
		return fmt.Errorf("model: classifier needs images [C, H, W] of at least 4×4, got %v", shape)
	}
	if len(c.Widths) != 3 {
		return fmt.Errorf("model: classifier widths %v, want 3 (one per resolution)", c.Widths)
	}
	if c.Groups < 1 {
		return fmt.Errorf("model: classifier groups %d, want >= 1", c.Groups)
	}
	for _, w := range c.Widths {
		if w < 1 || w%min(c.Groups, w) != 0 {
			return fmt.Errorf("model: classifier width %d, want >= 1 and divisible by the %d groups", w, c.Groups)
		}
	}
	if c.Classes < 2 {
		return fmt.Errorf("model: classifier of %d classes, want >= 2", c.Classes)
	}
	return nil
}

// ClassifierOf is a small CNN: Conv3×3 → SiLU, then Conv3×3 → GroupNorm+SiLU
// four times (stride 2 at the second and fourth), global average pooling to
// the features, and a linear layer to the logits. The first layer has no
// normalisation so that the features keep the images' brightness and contrast,
// which sample quality is partly about.
type ClassifierOf[T Float] struct {
	cfg ClassifierConfig
	// net holds the parameters and the shape, as the builder expects; its
	// score-network config is unused.
	net *NetOf[T]
}

// Classifier is the float32 classifier used for training and features.
type Classifier = ClassifierOf[float32]

// NewClassifier builds a float32 classifier for images of shape [C, H, W],
// with zero parameters (call Init, or fill Params).
func NewClassifier(cfg ClassifierConfig, shape []int) (*Classifier, error) {
	return newClassifier[float32](cfg, shape)
}

// NewClassifier64 is NewClassifier in float64, for gradient checks.
func NewClassifier64(cfg ClassifierConfig, shape []int) (*ClassifierOf[float64], error) {
	return newClassifier[float64](cfg, shape)
}

func newClassifier[T Float](cfg ClassifierConfig, shape []int) (*ClassifierOf[T], error) {
	if err := cfg.Validate(shape); err != nil {
		return nil, err
	}
	cfg.Widths = slices.Clone(cfg.Widths)
	n := &NetOf[T]{cfg: Config{Arch: "classifier"}, shape: slices.Clone(shape), dim: prod(shape)}
	n.p, n.specs = layout[T](classifierSpecs(cfg, shape[0]))
	return &ClassifierOf[T]{cfg: cfg, net: n}, nil
}

func classifierSpecs(c ClassifierConfig, cin int) []pspec {
	w1, w2, w3 := c.Widths[0], c.Widths[1], c.Widths[2]
	var s []pspec
	s = append(s, convSpecs("c1", cin, w1)...)
	s = append(s, convSpecs("c2", w1, w2)...)
	s = append(s, gnSpecs("n2", w2)...)
	s = append(s, convSpecs("c3", w2, w2)...)
	s = append(s, gnSpecs("n3", w2)...)
	s = append(s, convSpecs("c4", w2, w3)...)
	s = append(s, gnSpecs("n4", w3)...)
	s = append(s, convSpecs("c5", w3, w3)...)
	s = append(s, gnSpecs("n5", w3)...)
	return append(s, linearSpecs("fc", w3, c.Classes)...)
}

// Config returns the configuration.
func (c *ClassifierOf[T]) Config() ClassifierConfig {
	cfg := c.cfg
	cfg.Widths = slices.Clone(cfg.Widths)
	return cfg
}

// Shape returns the per-example image shape [C, H, W].
func (c *ClassifierOf[T]) Shape() []int { return c.net.Shape() }

// FeatureDim is the width of the feature layer.
func (c *ClassifierOf[T]) FeatureDim() int { return c.cfg.Widths[2] }

// Params returns the one parameter buffer (PyTorch layouts, like the score
// networks'); trainers and featurizers read it on every run.
func (c *ClassifierOf[T]) Params() *ParamsOf[T] { return c.net.p }

// Init sets PyTorch's default initialisation, deterministically from seed.
func (c *ClassifierOf[T]) Init(seed uint64) { c.net.Init(seed) }

// classifierForward builds the network on NHWC images, returning the
// features [B, w3] and the logits [B, classes].
func (b *builder[T]) classifierForward(cfg ClassifierConfig, x *gorgonia.Node) (feat, logits *gorgonia.Node, err error) {
	w1, w2, w3, g := cfg.Widths[0], cfg.Widths[1], cfg.Widths[2], cfg.Groups
	h, err := b.conv("c1", x, w1, 1, nil, nil, false)
	if err != nil {
		return nil, nil, err
	}
	if h, err = b.siluWide("a1", h); err != nil {
		return nil, nil, err
	}
	for _, l := range []struct {
		conv, norm    string
		width, stride int
	}{{"c2", "n2", w2, 2}, {"c3", "n3", w2, 1}, {"c4", "n4", w3, 2}, {"c5", "n5", w3, 1}} {
		if h, err = b.conv(l.conv, h, l.width, l.stride, nil, nil, true); err != nil {
			return nil, nil, err
		}
		if h, err = b.gnsilu(l.norm, h, g); err != nil {
			return nil, nil, err
		}
	}
	if feat, err = b.meanPool("pool", h); err != nil {
		return nil, nil, err
	}
	logits, err = b.linear("fc", feat, cfg.Classes, true)
	return feat, logits, err
}

// toNHWC converts a batch of [C, H, W] images to NHWC (a copy for C = 1).
func toNHWC[T Float](dst, src []T, batch, c, hw int) {
	if c == 1 {
		copy(dst, src)
		return
	}
	for s := 0; s < batch; s++ {
		o := s * c * hw
		for ch := 0; ch < c; ch++ {
			for p := 0; p < hw; p++ {
				dst[o+p*c+ch] = src[o+ch*hw+p]
			}
		}
	}
}

// ClassifierTrainerOf computes the cross-entropy and its parameter gradient
// for one batch size on one graph, reused by every Run (serialised).
type ClassifierTrainerOf[T Float] struct {
	mu     sync.Mutex
	c      *ClassifierOf[T]
	batch  int
	vm     gorgonia.VM
	xin    []T
	labels []int
	losses []T
	pred   []int
	grad   []T
}

// ClassifierTrainer is the float32 trainer.
type ClassifierTrainer = ClassifierTrainerOf[float32]

// NewTrainer builds the loss and gradient graph for batch images.
func (c *ClassifierOf[T]) NewTrainer(batch int) (*ClassifierTrainerOf[T], error) {
	if batch < 1 {
		return nil, fmt.Errorf("model: classifier batch %d, want >= 1", batch)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	b := newBuilder(c.net, batch, true)
	t := &ClassifierTrainerOf[T]{c: c, batch: batch, grad: b.grad, xin: make([]T, batch*c.net.dim),
		labels: make([]int, batch), losses: make([]T, batch), pred: make([]int, batch)}
	sh := c.net.shape
	_, logits, err := b.classifierForward(c.cfg, b.input("x", t.xin, batch, sh[1], sh[2], sh[0]))
	if err != nil {
		return nil, err
	}
	loss, err := b.softmaxXent(logits, t.labels, t.losses, t.pred)
	if err != nil {
		return nil, err
	}
	if _, err := gorgonia.Grad(loss, b.params...); err != nil {
		return nil, fmt.Errorf("model: classifier gradient graph: %w", err)
	}
	t.vm = gorgonia.NewTapeMachine(b.g)
	return t, nil
}

// Run computes, for batch images x ([C, H, W] each, one after another) with
// labels, the sum over the batch of the cross-entropy's gradient into grad
// (len(Params().Data)), and returns the summed loss and how many images the
// network classified correctly.
func (t *ClassifierTrainerOf[T]) Run(x []T, labels []int, grad []T) (loss float64, correct int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.vm == nil {
		return 0, 0, ErrClosed
	}
	sh := t.c.net.shape
	switch {
	case len(x) != t.batch*t.c.net.dim:
		return 0, 0, fmt.Errorf("model: classifier: x has %d values, want %d (batch %d)", len(x), t.batch*t.c.net.dim, t.batch)
	case len(labels) != t.batch:
		return 0, 0, fmt.Errorf("model: classifier: %d labels for a batch of %d", len(labels), t.batch)
	case len(grad) != len(t.grad):
		return 0, 0, fmt.Errorf("model: classifier: gradient of %d values, want %d", len(grad), len(t.grad))
	}
	for i, l := range labels {
		if l < 0 || l >= t.c.cfg.Classes {
			return 0, 0, fmt.Errorf("model: classifier: label %d of example %d, want 0..%d", l, i, t.c.cfg.Classes-1)
		}
	}
	copy(t.labels, labels)
	toNHWC(t.xin, x, t.batch, sh[0], sh[1]*sh[2])
	err = t.vm.RunAll()
	t.vm.Reset()
	if err != nil {
		return 0, 0, fmt.Errorf("model: classifier: %w", err)
	}
	copy(grad, t.grad)
	for i, l := range t.losses {
		loss += float64(l)
		if t.pred[i] == labels[i] {
			correct++
		}
	}
	return loss, correct, nil
}

// Close releases the graph; it is idempotent.
func (t *ClassifierTrainerOf[T]) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.vm == nil {
		return nil
	}
	err := t.vm.Close()
	t.vm, t.grad, t.xin = nil, nil, nil
	return err
}

// FeaturizerOf evaluates the features and logits of one batch size without
// gradients (serialised Runs).
type FeaturizerOf[T Float] struct {
	mu     sync.Mutex
	c      *ClassifierOf[T]
	batch  int
	vm     gorgonia.VM
	xin    []T
	feat   []T // the pooling op's own output buffer
	logits []T // the linear op's own output buffer
}

// Featurizer is the float32 featurizer.
type Featurizer = FeaturizerOf[float32]

// NewFeaturizer builds the forward graph for batch images.
func (c *ClassifierOf[T]) NewFeaturizer(batch int) (*FeaturizerOf[T], error) {
	if batch < 1 {
		return nil, fmt.Errorf("model: classifier batch %d, want >= 1", batch)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	b := newBuilder(c.net, batch, false)
	f := &FeaturizerOf[T]{c: c, batch: batch, xin: make([]T, batch*c.net.dim)}
	sh := c.net.shape
	feat, logits, err := b.classifierForward(c.cfg, b.input("x", f.xin, batch, sh[1], sh[2], sh[0]))
	if err != nil {
		return nil, err
	}
	// Every op of this package writes its own buffer, so the feature layer's
	// values are still there after the run (gorgonia's own ops reuse theirs).
	f.feat = feat.Op().(*node[T]).out.Data().([]T)
	f.logits = logits.Op().(*node[T]).out.Data().([]T)
	f.vm = gorgonia.NewTapeMachine(b.g)
	return f, nil
}

// Batch is the number of images of every Run.
func (f *FeaturizerOf[T]) Batch() int { return f.batch }

// Run sets features (batch × FeatureDim) and logits (batch × Classes) of
// batch images x ([C, H, W] each); either output may be nil.
func (f *FeaturizerOf[T]) Run(x, features, logits []T) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vm == nil {
		return ErrClosed
	}
	switch {
	case len(x) != f.batch*f.c.net.dim:
		return fmt.Errorf("model: featurizer: x has %d values, want %d (batch %d)", len(x), f.batch*f.c.net.dim, f.batch)
	case features != nil && len(features) != len(f.feat):
		return fmt.Errorf("model: featurizer: features buffer of %d values, want %d", len(features), len(f.feat))
	case logits != nil && len(logits) != len(f.logits):
		return fmt.Errorf("model: featurizer: logits buffer of %d values, want %d", len(logits), len(f.logits))
	}
	sh := f.c.net.shape
	toNHWC(f.xin, x, f.batch, sh[0], sh[1]*sh[2])
	err := f.vm.RunAll()
	f.vm.Reset()
	if err != nil {
		return fmt.Errorf("model: featurizer: %w", err)
	}
	copy(features, f.feat)
	copy(logits, f.logits)
	return nil
}

// Close releases the graph; it is idempotent.
func (f *FeaturizerOf[T]) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vm == nil {
		return nil
	}
	err := f.vm.Close()
	f.vm, f.xin, f.feat, f.logits = nil, nil, nil, nil
	return err
}
