package model

import (
	"fmt"
	"math"
	"testing"

	"golang.org/x/sys/cpu"
	"gorgonia.org/gorgonia"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// convCaseW is one convolution layer of the tests below.
type convCaseW struct {
	b, h, w, ci, co int
	add, res        bool
}

func (c convCaseW) String() string {
	return fmt.Sprintf("b%d_%dx%d_%d-%d_add=%v_res=%v", c.b, c.h, c.w, c.ci, c.co, c.add, c.res)
}

// Odd sizes put partial tiles on every side; 1×1 is all padding but one
// pixel; channel counts off the vector widths take the portable tails.
var winoCases = []convCaseW{
	{2, 5, 7, 3, 4, true, true},
	{3, 8, 8, 5, 2, false, false},
	{1, 1, 1, 2, 3, true, false},
	{2, 7, 7, 17, 9, false, true},
	{2, 6, 10, 24, 40, true, false},
	{1, 14, 13, 16, 8, true, true}, // interior tiles for F(4×4) too
}

// convOutputs are a conv layer's output and gradients (weight, bias, add, x),
// under a random linear probe of the output.
type convOutputs[T Float] struct {
	y, dw, db, dadd, dx []T
}

// runConv runs one conv layer forward and backward with the given policy.
// Inputs are the same float32-representable values for either T.
func runConv[T Float](t *testing.T, pol convPolicy, c convCaseW, seed uint64) convOutputs[T] {
	t.Helper()
	in := func(name string, shape ...int) pspec { return pspec{name, shape, 1, kWeight} }
	specs := append([]pspec{in("x", c.b, c.h, c.w, c.ci)}, convSpecs("c", c.ci, c.co)...)
	if c.add {
		specs = append(specs, in("add", c.b, c.co))
	}
	if c.res {
		specs = append(specs, in("res", c.b, c.h, c.w, c.co))
	}
	n := &NetOf[T]{cfg: Config{Arch: "test"}, conv: pol}
	n.p, n.specs = layout[T](specs)
	r := keyrand.New(seed, 1)
	for i := range n.p.Data {
		n.p.Data[i] = T(float32(2*r.Float64() - 1))
	}
	b := newBuilder(n, c.b, true)
	var add, res *gorgonia.Node
	if c.add {
		add = b.param("add")
	}
	if c.res {
		res = b.param("res")
	}
	y, err := b.conv("c", b.param("x"), c.co, 1, add, res, true)
	if err != nil {
		t.Fatal(err)
	}
	wts := make([]T, y.Shape().TotalSize())
	for i := range wts {
		wts[i] = T(float32(2*r.Float64() - 1))
	}
	shape := y.Shape().Clone()
	loss, err := apply[T]("probe", nil, nil, func(s []T, in [][]T) {
		s[0] = 0
		for i, v := range in[0] {
			s[0] += wts[i] * v
		}
	}, []bool{true}, func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
		d, err := apply[T]("probe.bwd", shape, nil, func(d []T, in [][]T) {
			copy(d, wts)
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
	vm := gorgonia.NewTapeMachine(b.g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	get := func(name string) []T {
		i := n.p.Index(name)
		if i < 0 {
			return nil
		}
		return append([]T(nil), grads[i].Value().Data().([]T)...)
	}
	return convOutputs[T]{
		y:  append([]T(nil), y.Op().(*node[T]).out.Data().([]T)...),
		dw: get("c.weight"), db: get("c.bias"), dadd: get("add"), dx: get("x"),
	}
}

func (o convOutputs[T]) fields() map[string][]T {
	return map[string][]T{"y": o.y, "dw": o.dw, "db": o.db, "dadd": o.dadd, "dx": o.dx}
}

func up[T Float](v []T) []float64 {
	r := make([]float64, len(v))
	for i, x := range v {
		r[i] = float64(x)
	}
	return r
}

var winoAlgos = []convAlgo{convWino2, convWino4}

// TestWinogradMatchesDirect: in float64, Winograd's output and gradients are
// the direct convolution's up to rounding.
func TestWinogradMatchesDirect(t *testing.T) {
	for _, algo := range winoAlgos {
		for _, c := range winoCases {
			t.Run(algo.String()+"/"+c.String(), func(t *testing.T) {
				want := runConv[float64](t, convPolicy{forced: true, algo: convDirect}, c, 3).fields()
				got := runConv[float64](t, convPolicy{forced: true, algo: algo}, c, 3).fields()
				for name, w := range want {
					if w == nil {
						continue
					}
					if e := relErr(got[name], w); e > 1e-12 || math.IsNaN(e) {
						t.Errorf("%s: relative error %.3g", name, e)
					}
				}
			})
		}
	}
}

// TestMixedAlgorithmsMatchDirect: a layer whose backward runs another algorithm
// than its forward (as the rule picks for some layers) re-transforms the weights
// for it and still gives the direct convolution's output and gradients.
func TestMixedAlgorithmsMatchDirect(t *testing.T) {
	for _, pair := range [][2]convAlgo{{convWino2, convWino4}, {convDirect, convWino4}, {convWino4, convDirect}, {convWino4, convWino2}} {
		for _, c := range winoCases {
			t.Run(pair[0].String()+"-"+pair[1].String()+"/"+c.String(), func(t *testing.T) {
				want := runConv[float64](t, convPolicy{forced: true, algo: convDirect}, c, 3).fields()
				got := runConv[float64](t, convPolicy{forced: true, algo: pair[0], split: true, bwd: pair[1]}, c, 3).fields()
				for name, w := range want {
					if w == nil {
						continue
					}
					if e := relErr(got[name], w); e > 1e-12 || math.IsNaN(e) {
						t.Errorf("%s: relative error %.3g", name, e)
					}
				}
			})
		}
	}
}

// TestWinogradGradients checks Winograd's backward against finite
// differences of its own forward.
func TestWinogradGradients(t *testing.T) {
	const bs = 2
	for _, algo := range winoAlgos {
		for _, c := range []convCaseW{{bs, 5, 6, 3, 2, true, true}, {bs, 4, 4, 2, 3, false, false}} {
			t.Run(algo.String()+"/"+c.String(), func(t *testing.T) {
				in := func(name string, shape ...int) pspec { return pspec{name, shape, 1, kWeight} }
				specs := append([]pspec{in("x", bs, c.h, c.w, c.ci)}, convSpecs("c", c.ci, c.co)...)
				if c.add {
					specs = append(specs, in("add", bs, c.co))
				}
				if c.res {
					specs = append(specs, in("res", bs, c.h, c.w, c.co))
				}
				newOpHarness(t, bs, specs, func(b *builder[float64]) (*gorgonia.Node, error) {
					b.net.conv = convPolicy{forced: true, algo: algo}
					var add, res *gorgonia.Node
					if c.add {
						add = b.param("add")
					}
					if c.res {
						res = b.param("res")
					}
					return b.conv("c", b.param("x"), c.co, 1, add, res, true)
				}).check(t, 1e-6)
			})
		}
	}
}

// TestWinogradTransformsAsm compares each generated transform this CPU can run
// with the portable loop, for every variant it implements, at strides that are
// not multiples of the vector width.
func TestWinogradTransformsAsm(t *testing.T) {
	can := map[string]bool{
		"avx512": cpu.X86.HasAVX512F && cpu.X86.HasAVX2 && cpu.X86.HasFMA,
		"avx2":   cpu.X86.HasAVX2 && cpu.X86.HasFMA,
	}
	r := keyrand.New(5, 5)
	ran := 0
	for _, a := range winoAsm {
		if !can[a.isa] {
			continue
		}
		x := a.x
		for v := range 8 {
			if a.variants&(1<<v) == 0 {
				continue
			}
			withBias, withRes, overlap := v&1 != 0, v&2 != 0, v&4 != 0
			n := 3 * a.lanes
			inCol, outCol := n+3, n+1
			inRow, outRow := x.q*inCol+5, x.p*outCol+7
			in := make([]float32, x.q*inRow)
			out := make([]float32, x.p*outRow)
			bias := make([]float32, n)
			res := make([]float32, len(out))
			for _, s := range [][]float32{in, out, bias, res} {
				for i := range s {
					s[i] = float32(2*r.Float64() - 1)
				}
			}
			var b32, r32 *float32
			var b64, r64 []float64
			if withBias {
				b32, b64 = &bias[0], up(bias)
			}
			if withRes {
				r32, r64 = &res[0], up(res)
			}
			want := up(out)
			xformGo(x, 0, n, up(in), inRow, inCol, want, outRow, outCol, b64, r64, overlap)
			got := append([]float32(nil), out...)
			a.fn(n, &in[0], inRow, inCol, &got[0], outRow, outCol, b32, r32, overlap)
			// Bound: float32 rounding of Σ|L||L||in| over at most 36 terms.
			var l1 float64
			for _, c := range x.l {
				l1 = math.Max(l1, math.Abs(c))
			}
			tol := 64 * float64(x.q*x.q) * l1 * l1 / (1 << 24)
			for i := range got {
				if d := math.Abs(float64(got[i]) - want[i]); !(d <= tol) {
					t.Fatalf("%s %p variant %d: out[%d] = %g, want %g", a.isa, x, v, i, got[i], want[i])
				}
			}
			ran++
		}
	}
	if ran == 0 {
		t.Skip("no vector transforms on this CPU")
	}
}

// TestWinogradFloat32Error states the float32 error of each algorithm against
// the float64 direct convolution, on the U-Net's layer shapes with inputs and
// weights uniform in [−1, 1]: ‖got − want‖∞ / ‖want‖∞ per output. Winograd's
// transforms add terms of mixed signs (F(4×4) weighs them by up to 8 and 1/24),
// so its error is larger than the direct sum's, and must stay well below
// what the training tests tolerate (1e-4 on whole-network gradients).
func TestWinogradFloat32Error(t *testing.T) {
	bound := map[convAlgo]float64{convDirect: 2e-6, convWino2: 4e-6, convWino4: 4e-5}
	for _, c := range []convCaseW{{2, 28, 28, 32, 32, true, true}, {2, 14, 14, 192, 64, false, false}, {4, 7, 7, 128, 128, true, false}} {
		want := runConv[float64](t, convPolicy{forced: true, algo: convDirect}, c, 7).fields()
		for _, algo := range []convAlgo{convDirect, convWino2, convWino4} {
			got := runConv[float32](t, convPolicy{forced: true, algo: algo}, c, 7).fields()
			for _, name := range []string{"y", "dw", "dx"} {
				e := relErr(up(got[name]), want[name])
				t.Logf("%v %s %s: %.2g", c, algo, name, e)
				if e > bound[algo] || math.IsNaN(e) {
					t.Errorf("%v %s %s: float32 error %.3g > %g", c, algo, name, e, bound[algo])
				}
			}
		}
	}
}

// TestXformApplySplit: xformApply's split of the channels over the vector
// routines (16 and 8 lanes) and the portable loop lines up biases, residuals
// and outputs, for every transform and variant in use.
func TestXformApplySplit(t *testing.T) {
	r := keyrand.New(6, 6)
	for _, spec := range []*winoSpec{wino2, wino4} {
		for _, x := range []*xform{spec.in, spec.out, spec.dy, spec.dx, spec.w, spec.dw} {
			for v := range 8 {
				withBias, withRes, overlap := v&1 != 0, v&2 != 0, v&4 != 0
				const n = 16 + 8 + 3
				inCol, outCol := n+2, n+5
				inRow, outRow := x.q*inCol+1, x.p*outCol+3
				in, out := make([]float32, x.q*inRow), make([]float32, x.p*outRow)
				bias, res := make([]float32, n), make([]float32, len(out))
				for _, s := range [][]float32{in, out, bias, res} {
					for i := range s {
						s[i] = float32(2*r.Float64() - 1)
					}
				}
				var b32, r32 []float32
				var b64, r64 []float64
				if withBias {
					b32, b64 = bias, up(bias)
				}
				if withRes {
					r32, r64 = res, up(res)
				}
				want := up(out)
				xformGo(x, 0, n, up(in), inRow, inCol, want, outRow, outCol, b64, r64, overlap)
				got := append([]float32(nil), out...)
				xformApply(x, n, in, inRow, inCol, got, outRow, outCol, b32, r32, overlap)
				for i := range got {
					if d := math.Abs(float64(got[i]) - want[i]); !(d <= 1e-4) {
						t.Fatalf("%s %dx%d variant %d: out[%d] = %g, want %g", spec.name, x.p, x.q, v, i, got[i], want[i])
					}
				}
			}
		}
	}
}
