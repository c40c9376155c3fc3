package model

import (
	"fmt"
	"math"
	"testing"

	"gorgonia.org/gorgonia"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// fdStep is the finite-difference step of the float64 gradient checks.
const fdStep = 1e-4

// fd4 is the fourth-order central difference of f at the current value of *v.
func fd4(v *float64, f func() float64) float64 {
	x0 := *v
	at := func(d float64) float64 { *v = x0 + d; return f() }
	r := (-at(2*fdStep) + 8*at(fdStep) - 8*at(-fdStep) + at(-2*fdStep)) / (12 * fdStep)
	*v = x0
	return r
}

// relErr is ‖a − n‖∞ / ‖n‖∞ over the checked coordinates.
func relErr(a, n []float64) float64 {
	var d, m float64
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-n[i]))
		m = math.Max(m, math.Abs(n[i]))
	}
	if m == 0 {
		return d
	}
	return d / m
}

// opHarness builds one op on "parameters" (the op's inputs and weights, all
// differentiable), reduces its output with fixed random weights to a scalar,
// and compares gorgonia's gradients with finite differences.
type opHarness struct {
	n     *Net64
	b     *builder[float64]
	vm    gorgonia.VM
	loss  *gorgonia.Node
	grads gorgonia.Nodes
}

func newOpHarness(t *testing.T, batch int, specs []pspec, build func(b *builder[float64]) (*gorgonia.Node, error)) *opHarness {
	t.Helper()
	n := &Net64{cfg: Config{Arch: "test"}}
	n.p, n.specs = layout[float64](specs)
	r := keyrand.New(99, uint64(len(specs)))
	for i := range n.p.Data {
		n.p.Data[i] = 2*r.Float64() - 1
	}
	b := newBuilder(n, batch, true)
	y, err := build(b)
	if err != nil {
		t.Fatal(err)
	}
	wts := make([]float64, y.Shape().TotalSize())
	for i := range wts {
		wts[i] = 2*r.Float64() - 1
	}
	shape := y.Shape().Clone()
	loss, err := apply[float64]("probe", nil, nil, func(s []float64, in [][]float64) {
		s[0] = 0
		for i, v := range in[0] {
			s[0] += wts[i] * v
		}
	}, []bool{true}, func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
		d, err := apply[float64]("probe.bwd", shape, nil, func(d []float64, in [][]float64) {
			for i, w := range wts {
				d[i] = in[0][0] * w
			}
		}, nil, nil, grad)
		return gorgonia.Nodes{d}, err
	}, y)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := gorgonia.Grad(loss, b.params...)
	if err != nil {
		t.Fatal(err)
	}
	return &opHarness{n: n, b: b, vm: gorgonia.NewTapeMachine(b.g), loss: loss, grads: grads}
}

func (h *opHarness) run(t *testing.T) float64 {
	t.Helper()
	if err := h.vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	l := float64(*h.loss.Value().(*gorgonia.F64))
	h.vm.Reset()
	return l
}

// check compares every coordinate of every tensor's gradient.
func (h *opHarness) check(t *testing.T, tol float64) {
	t.Helper()
	h.run(t)
	p := h.n.p
	an := make([][]float64, len(p.Names))
	for i, g := range h.grads {
		an[i] = append([]float64(nil), g.Value().Data().([]float64)...)
	}
	for i, name := range p.Names {
		d := p.Data[p.Offsets[i] : p.Offsets[i]+prod(p.Shapes[i])]
		num := make([]float64, len(d))
		for j := range d {
			num[j] = fd4(&d[j], func() float64 { return h.run(t) })
		}
		if e := relErr(an[i], num); e > tol || math.IsNaN(e) {
			t.Errorf("%s: relative error %.3g > %g\nanalytic %v\nnumeric  %v", name, e, tol, an[i][:min(6, len(d))], num[:min(6, len(d))])
		}
	}
}

// lift turns a scalar loss node into the tensor the probe reduces.
func lift(l *gorgonia.Node) (*gorgonia.Node, error) {
	return apply[float64]("lift", []int{1, 1}, nil, func(y []float64, in [][]float64) { y[0] = in[0][0] }, []bool{true},
		func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
			d, err := apply[float64]("lift.bwd", nil, nil, func(s []float64, in [][]float64) { s[0] = in[0][0] }, nil, nil, grad)
			return gorgonia.Nodes{d}, err
		}, l)
}

func TestOpGradients(t *testing.T) {
	const bs = 3
	type tc struct {
		name  string
		specs []pspec
		build func(b *builder[float64]) (*gorgonia.Node, error)
	}
	in := func(name string, shape ...int) pspec { return pspec{name, shape, 1, kWeight} }
	convCase := func(name string, h, w, ci, co, stride int, withAdd, withRes bool) tc {
		specs := append([]pspec{in("x", bs, h, w, ci)}, convSpecs("c", ci, co)...)
		ho, wo := (h-1)/stride+1, (w-1)/stride+1
		if withAdd {
			specs = append(specs, in("add", bs, co))
		}
		if withRes {
			specs = append(specs, in("res", bs, ho, wo, co))
		}
		return tc{name, specs, func(b *builder[float64]) (*gorgonia.Node, error) {
			var add, res *gorgonia.Node
			if withAdd {
				add = b.param("add")
			}
			if withRes {
				res = b.param("res")
			}
			return b.conv("c", b.param("x"), co, stride, add, res, true)
		}}
	}
	cases := []tc{
		{"linear", append([]pspec{in("x", bs, 5)}, linearSpecs("l", 5, 4)...), func(b *builder[float64]) (*gorgonia.Node, error) {
			return b.linear("l", b.param("x"), 4, true)
		}},
		{"silu", []pspec{in("x", bs, 7)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			return b.silu("s", b.param("x"))
		}},
		{"softplus", []pspec{in("x", bs, 7)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			return b.softplus("s", b.param("x"))
		}},
		convCase("conv s1", 5, 4, 3, 2, 1, false, false),
		convCase("conv s2 odd", 5, 5, 2, 3, 2, false, false),
		convCase("conv s2 even", 6, 4, 2, 3, 2, false, false),
		convCase("conv s1 add res", 4, 5, 2, 3, 1, true, true),
		convCase("conv 1x1 image", 1, 1, 2, 2, 1, true, false),
		{"gnsilu", append([]pspec{in("x", bs, 3, 2, 6)}, gnSpecs("n", 6)...), func(b *builder[float64]) (*gorgonia.Node, error) {
			return b.gnsilu("n", b.param("x"), 3)
		}},
		{"gnsilu one group", append([]pspec{in("x", bs, 2, 2, 4)}, gnSpecs("n", 4)...), func(b *builder[float64]) (*gorgonia.Node, error) {
			return b.gnsilu("n", b.param("x"), 1)
		}},
		{"upcat", []pspec{in("m", bs, 2, 3, 3), in("s", bs, 4, 6, 2)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			return b.upcat("u", b.param("m"), b.param("s"))
		}},
		{"dsm", []pspec{in("o", bs, 4)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			z := b.input("z", []float64{0.5, -1, 2, 0.1, 0, 0.3, -0.7, 1.1, 0.2, -0.2, 0.9, -1.5}, bs, 4)
			l, err := b.dsmLoss(b.param("o"), z, []float64{1, 0.25, 3}, make([]float64, bs))
			if err != nil {
				return nil, err
			}
			return lift(l)
		}},
		// Two pairs (rows 0, 1 at +h·v, rows 2, 3 at −h·v) in an NHWC layout.
		{"fdssm", []pspec{in("o", 4, 2, 1, 3)}, func(b *builder[float64]) (*gorgonia.Node, error) {
			v := b.input("v", []float64{1, -1, 1, -1, -1, 1, 0.5, 2, -0.3, 0.7, 1.2, -0.4}, 2, 2, 1, 3)
			l, err := b.fdssmLoss(b.param("o"), v, []float64{0.7, -1.3}, []float64{0.4, 2.1}, make([]float64, 2))
			if err != nil {
				return nil, err
			}
			return lift(l)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			newOpHarness(t, bs, c.specs, c.build).check(t, 1e-6)
		})
	}
}

// TestGNMatchesDefinition checks the GroupNorm+SiLU forward against a direct
// float64 evaluation of PyTorch's definition (the backward is checked above).
func TestGNMatchesDefinition(t *testing.T) {
	const bs, h, w, c, g = 2, 3, 3, 4, 2
	specs := append([]pspec{{"x", []int{bs, h, w, c}, 1, kWeight}}, gnSpecs("n", c)...)
	var out *gorgonia.Node
	hs := newOpHarness(t, bs, specs, func(b *builder[float64]) (*gorgonia.Node, error) {
		var err error
		out, err = b.gnsilu("n", b.param("x"), g)
		return out, err
	})
	p := hs.n.p
	// Shift one sample far from zero: the variance must not cancel.
	x, _ := p.Tensor("x")
	for i := 0; i < h*w*c; i++ {
		x[i] += 1000
	}
	if err := hs.vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := append([]float64(nil), out.Value().Data().([]float64)...)
	hs.vm.Reset()
	gamma, _ := p.Tensor("n.weight")
	beta, _ := p.Tensor("n.bias")
	for s := 0; s < bs; s++ {
		for k := 0; k < g; k++ {
			var m, v float64
			n := 0
			for pix := 0; pix < h*w; pix++ {
				for j := k * c / g; j < (k+1)*c/g; j++ {
					m += x[(s*h*w+pix)*c+j]
					n++
				}
			}
			m /= float64(n)
			for pix := 0; pix < h*w; pix++ {
				for j := k * c / g; j < (k+1)*c/g; j++ {
					d := x[(s*h*w+pix)*c+j] - m
					v += d * d
				}
			}
			v /= float64(n)
			for pix := 0; pix < h*w; pix++ {
				for j := k * c / g; j < (k+1)*c/g; j++ {
					i := (s*h*w+pix)*c + j
					u := (x[i]-m)/math.Sqrt(v+gnEps)*gamma[j] + beta[j]
					want := u / (1 + math.Exp(-u))
					if math.Abs(got[i]-want) > 1e-12*math.Max(1, math.Abs(want)) {
						t.Fatalf("sample %d group %d value %d: got %v, want %v", s, k, i, got[i], want)
					}
				}
			}
		}
	}
}

func TestExpf(t *testing.T) {
	var worst float64
	for x := float32(-87); x <= 88; x += 0.0137 {
		want := math.Exp(float64(x))
		e := math.Abs(float64(expf(x))-want) / want
		worst = math.Max(worst, e)
	}
	if worst > 3e-7 {
		t.Fatalf("expf relative error %.3g, want <= 3e-7", worst)
	}
	if got := expf(0); got != 1 {
		t.Errorf("expf(0) = %v", got)
	}
	// Out of range arguments saturate instead of overflowing.
	if lo, hi := expf(-200), expf(200); lo > 1e-37 || hi < 1e38 || math.IsInf(float64(hi), 0) {
		t.Errorf("expf(-200) = %v, expf(200) = %v", lo, hi)
	}
}

func TestLog1p32(t *testing.T) {
	var worst float64
	for x := float32(0); x <= 1; x += 1.0 / 4096 {
		for _, v := range []float32{x, x * 1e-6} {
			want := math.Log1p(float64(v))
			e := math.Abs(float64(log1p32(v)) - want)
			if want > 0 {
				e /= want
			}
			worst = math.Max(worst, e)
		}
	}
	if worst > 3e-7 {
		t.Fatalf("log1p32 relative error %.3g, want <= 3e-7", worst)
	}
}

func ExampleParamsOf_Tensor() {
	n, _ := New(Config{Arch: "mlp"}, []int{2})
	w, _ := n.Params().Tensor("f.0.weight")
	fmt.Println(len(w), n.Params().Shapes[0])
	// Output: 384 [128 3]
}

func BenchmarkExpBatch(b *testing.B) {
	v := make([]float32, 4096)
	for i := range v {
		v[i] = float32(i%200)/10 - 10
	}
	b.SetBytes(int64(4 * len(v)))
	for i := 0; i < b.N; i++ {
		expBatch(v)
		for j := range v {
			v[j] = float32(j%200)/10 - 10
		}
	}
}
