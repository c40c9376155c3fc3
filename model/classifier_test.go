package model

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"gorgonia.org/gorgonia"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// TestClassifierOpGradients checks the classifier's own ops (pooling,
// cross-entropy, batch-wide SiLU) against float64 finite differences.
func TestClassifierOpGradients(t *testing.T) {
	const bs = 3
	in := func(name string, shape ...int) pspec { return pspec{name, shape, 1, kWeight} }
	for _, c := range []struct {
		name  string
		specs []pspec
		build func(b *builder[float64]) (*gorgonia.Node, error)
	}{
		{"siluWide", []pspec{in("x", bs, 2, 3, 2)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			return b.siluWide("s", b.param("x"))
		}},
		{"meanPool", []pspec{in("x", bs, 3, 2, 4)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			return b.meanPool("p", b.param("x"))
		}},
		{"meanPool 1x1", []pspec{in("x", bs, 1, 1, 2)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			return b.meanPool("p", b.param("x"))
		}},
		{"softmaxXent", []pspec{in("l", bs, 4)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			l, err := b.softmaxXent(b.param("l"), []int{2, 0, 3}, make([]float64, bs), make([]int, bs))
			if err != nil {
				return nil, err
			}
			return lift(l)
		}},
		{"softmaxXent large logits", []pspec{in("l", bs, 2)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			// Logits near ±1000 overflow e^x unless the maximum is shifted out first.
			off := b.input("off", []float64{1000, -1000, 500, 500, -800, 0}, bs, 2)
			sum, err := apply[float64]("add", []int{bs, 2}, nil, func(y []float64, in [][]float64) {
				for i := range y {
					y[i] = in[0][i] + in[1][i]
				}
			}, []bool{true, false}, func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
				return gorgonia.Nodes{grad, nil}, nil
			}, b.param("l"), off)
			if err != nil {
				return nil, err
			}
			l, err := b.softmaxXent(sum, []int{1, 0, 1}, make([]float64, bs), make([]int, bs))
			if err != nil {
				return nil, err
			}
			return lift(l)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			newOpHarness(t, bs, c.specs, c.build).check(t, 1e-6)
		})
	}
}

// TestXentMatchesDefinition: the loss is −log softmax(l)_y, the prediction its argmax.
func TestXentMatchesDefinition(t *testing.T) {
	const bs, k = 2, 3
	logits := []float64{0.5, -1, 2, 3, 3.5, -2}
	labels := []int{0, 1}
	losses, pred := make([]float64, bs), make([]int, bs)
	var out *gorgonia.Node
	h := newOpHarness(t, bs, []pspec{{"l", []int{bs, k}, 1, kWeight}}, func(b *builder[float64]) (*gorgonia.Node, error) {
		var err error
		if out, err = b.softmaxXent(b.param("l"), labels, losses, pred); err != nil {
			return nil, err
		}
		return lift(out)
	})
	copy(h.n.p.Data, logits)
	h.run(t)
	for i := 0; i < bs; i++ {
		var z float64
		for j := 0; j < k; j++ {
			z += math.Exp(logits[i*k+j])
		}
		if want := math.Log(z) - logits[i*k+labels[i]]; math.Abs(losses[i]-want) > 1e-12 {
			t.Errorf("sample %d: loss %v, want %v", i, losses[i], want)
		}
	}
	if !slices.Equal(pred, []int{2, 1}) {
		t.Errorf("predictions %v, want [2 1]", pred)
	}
}

var tinyClassifier = ClassifierConfig{Widths: []int{4, 6, 8}, Groups: 2, Classes: 3}

// classBatch draws images and labels for a batch.
func classBatch[T Float](key uint64, batch, dim, classes int) ([]T, []int) {
	r := keyrand.New(key)
	x, y := make([]T, batch*dim), make([]int, batch)
	for i := range x {
		x[i] = T(r.Float64())
	}
	for i := range y {
		y[i] = r.IntN(classes)
	}
	return x, y
}

// TestClassifierGradients compares the whole classifier's gradient (summed
// cross-entropy) with fourth-order finite differences in float64, for gray
// and colour images.
func TestClassifierGradients(t *testing.T) {
	for _, shape := range [][]int{{1, 8, 8}, {3, 6, 5}} {
		t.Run(fmt.Sprintf("%dx%dx%d", shape[0], shape[1], shape[2]), func(t *testing.T) {
			const batch = 3
			c, err := NewClassifier64(tinyClassifier, shape)
			if err != nil {
				t.Fatal(err)
			}
			c.Init(3)
			p := c.Params()
			// Move GroupNorm affine parameters off 1 and 0 so their gradients matter.
			r := keyrand.New(5)
			for i, name := range p.Names {
				if strings.HasPrefix(name, "n") {
					d := p.Data[p.Offsets[i] : p.Offsets[i]+prod(p.Shapes[i])]
					for j := range d {
						d[j] += 0.3 * (2*r.Float64() - 1)
					}
				}
			}
			tr, err := c.NewTrainer(batch)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			x, y := classBatch[float64](7, batch, prod(shape), tinyClassifier.Classes)
			grad := make([]float64, len(p.Data))
			if _, _, err := tr.Run(x, y, grad); err != nil {
				t.Fatal(err)
			}
			scratch := make([]float64, len(p.Data))
			loss := func() float64 {
				l, _, err := tr.Run(x, y, scratch)
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			for i, name := range p.Names {
				size := prod(p.Shapes[i])
				idx := []int{0, size / 2, size - 1}
				an, num := make([]float64, len(idx)), make([]float64, len(idx))
				for k, j := range idx {
					an[k] = grad[p.Offsets[i]+j]
					num[k] = fd4(&p.Data[p.Offsets[i]+j], loss)
				}
				if e := relErr(an, num); e > 1e-6 || math.IsNaN(e) {
					t.Errorf("%s: relative error %.3g\nanalytic %v\nnumeric  %v", name, e, an, num)
				}
			}
		})
	}
}

// TestFeaturizerMatchesTrainer: the featurizer's logits give the trainer's
// loss and predictions, its features are the mean over pixels of the last
// layer (checked through the logits: fc applied to them gives the logits), and
// the float32 network agrees with the float64 one.
func TestFeaturizerMatchesTrainer(t *testing.T) {
	const batch = 4
	shape := []int{3, 8, 8}
	c32, err := NewClassifier(tinyClassifier, shape)
	if err != nil {
		t.Fatal(err)
	}
	c64, err := NewClassifier64(tinyClassifier, shape)
	if err != nil {
		t.Fatal(err)
	}
	c32.Init(2)
	for i, v := range c32.Params().Data {
		c64.Params().Data[i] = float64(v)
	}
	f32, err := c32.NewFeaturizer(batch)
	if err != nil {
		t.Fatal(err)
	}
	defer f32.Close()
	f64, err := c64.NewFeaturizer(batch)
	if err != nil {
		t.Fatal(err)
	}
	defer f64.Close()
	tr, err := c64.NewTrainer(batch)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	x, y := classBatch[float64](3, batch, prod(shape), tinyClassifier.Classes)
	x32 := make([]float32, len(x))
	for i, v := range x {
		x32[i] = float32(v)
	}
	k, d := tinyClassifier.Classes, c32.FeatureDim()
	feat, logits := make([]float64, batch*d), make([]float64, batch*k)
	if err := f64.Run(x, feat, logits); err != nil {
		t.Fatal(err)
	}
	feat32, logits32 := make([]float32, batch*d), make([]float32, batch*k)
	if err := f32.Run(x32, feat32, logits32); err != nil {
		t.Fatal(err)
	}
	w, _ := c64.Params().Tensor("fc.weight")
	bias, _ := c64.Params().Tensor("fc.bias")
	var want float64
	correct := 0
	for s := 0; s < batch; s++ {
		row := logits[s*k : (s+1)*k]
		var z float64
		best := 0
		for j, v := range row {
			z += math.Exp(v)
			if v > row[best] {
				best = j
			}
			// fc(features) = logits.
			o := bias[j]
			for i := 0; i < d; i++ {
				o += w[j*d+i] * feat[s*d+i]
			}
			if math.Abs(o-v) > 1e-12 {
				t.Fatalf("sample %d: fc(features)_%d = %v, logit %v", s, j, o, v)
			}
		}
		want += math.Log(z) - row[y[s]]
		if best == y[s] {
			correct++
		}
	}
	loss, got, err := tr.Run(x, y, make([]float64, len(c64.Params().Data)))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(loss-want) > 1e-10 || got != correct {
		t.Errorf("trainer: loss %v, %d correct; from the featurizer's logits %v, %d", loss, got, want, correct)
	}
	for i := range feat {
		if math.Abs(float64(feat32[i])-feat[i]) > 1e-4*math.Max(1, math.Abs(feat[i])) {
			t.Fatalf("feature %d: float32 %v, float64 %v", i, feat32[i], feat[i])
		}
	}
	// A second run of other images, then the first again: bitwise the same.
	other, _ := classBatch[float32](4, batch, prod(shape), k)
	if err := f32.Run(other, nil, nil); err != nil {
		t.Fatal(err)
	}
	again := make([]float32, batch*d)
	if err := f32.Run(x32, again, nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again, feat32) {
		t.Error("featurizer is not reproducible")
	}
}

// TestClassifierLearns: Adam on the trainer's gradient separates three
// classes of 8×8 images (a bright row, column or diagonal plus noise).
func TestClassifierLearns(t *testing.T) {
	const batch, steps = 32, 200
	c, err := NewClassifier(tinyClassifier, []int{1, 8, 8})
	if err != nil {
		t.Fatal(err)
	}
	c.Init(1)
	tr, err := c.NewTrainer(batch)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	opt, err := NewAdam(AdamConfig{LR: 3e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, len(c.Params().Data))
	if err != nil {
		t.Fatal(err)
	}
	r := keyrand.New(11)
	draw := func() ([]float32, []int) {
		x, y := make([]float32, batch*64), make([]int, batch)
		for s := range y {
			y[s] = r.IntN(3)
			at := r.IntN(8)
			for p := 0; p < 64; p++ {
				row, col := p/8, p%8
				on := (y[s] == 0 && row == at) || (y[s] == 1 && col == at) || (y[s] == 2 && row == col)
				v := 0.3 * r.Float64()
				if on {
					v += 0.7
				}
				x[s*64+p] = float32(v)
			}
		}
		return x, y
	}
	grad := make([]float32, len(c.Params().Data))
	var first float64
	for i := 0; i < steps; i++ {
		x, y := draw()
		loss, _, err := tr.Run(x, y, grad)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = loss / batch
		}
		for j := range grad {
			grad[j] /= batch
		}
		if _, err := opt.Update(c.Params().Data, grad); err != nil {
			t.Fatal(err)
		}
	}
	x, y := draw()
	loss, correct, err := tr.Run(x, y, grad)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss %.3f → %.3f, %d/%d correct", first, loss/batch, correct, batch)
	if correct < batch*9/10 || loss/batch > first/3 {
		t.Errorf("after %d steps: loss %.3f (from %.3f), %d/%d correct", steps, loss/batch, first, correct, batch)
	}
}

func TestClassifierErrors(t *testing.T) {
	for _, c := range []struct {
		cfg   ClassifierConfig
		shape []int
		want  string
	}{
		{tinyClassifier, []int{1, 28, 28}, ""},
		{tinyClassifier, []int{3, 32, 32}, ""},
		{tinyClassifier, []int{28, 28}, "images"},
		{tinyClassifier, []int{1, 2, 28}, "4×4"},
		{ClassifierConfig{Widths: []int{4, 8}, Groups: 2, Classes: 3}, []int{1, 8, 8}, "widths"},
		{ClassifierConfig{Widths: []int{4, 6, 9}, Groups: 2, Classes: 3}, []int{1, 8, 8}, "divisible"},
		{ClassifierConfig{Widths: []int{4, 6, 8}, Groups: 0, Classes: 3}, []int{1, 8, 8}, "groups"},
		{ClassifierConfig{Widths: []int{4, 6, 8}, Groups: 2, Classes: 1}, []int{1, 8, 8}, "classes"},
	} {
		_, err := NewClassifier(c.cfg, c.shape)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v %v: error %v, want %q", c.cfg, c.shape, err, c.want)
		}
	}
	c, err := NewClassifier(tinyClassifier, []int{1, 8, 8})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := c.NewTrainer(2)
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.NewFeaturizer(2)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 2*64)
	grad := make([]float32, len(c.Params().Data))
	for _, bad := range []struct {
		x      []float32
		labels []int
		grad   []float32
		want   string
	}{
		{x, []int{0, 3}, grad, "label 3"},
		{x, []int{-1, 0}, grad, "label -1"},
		{x, []int{0}, grad, "labels"},
		{x[:5], []int{0, 1}, grad, "x has"},
		{x, []int{0, 1}, grad[:3], "gradient"},
	} {
		if _, _, err := tr.Run(bad.x, bad.labels, bad.grad); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("trainer: error %v, want %q", err, bad.want)
		}
	}
	if err := f.Run(x, make([]float32, 3), nil); err == nil {
		t.Error("short features buffer accepted")
	}
	for i := 0; i < 2; i++ {
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := tr.Run(x, []int{0, 1}, grad); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
	if err := f.Run(x, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("featurizer Run after Close: %v", err)
	}
	if _, err := c.NewTrainer(0); err == nil {
		t.Error("batch 0 accepted")
	}
}
