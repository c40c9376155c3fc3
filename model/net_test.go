package model

import (
	"errors"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ncsn/ncsn/internal/keyrand"
)

func TestParamCount(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		shape []int
		want  int
		first string
	}{
		{Config{Arch: "mlp"}, []int{2}, 33794, "f.0.weight"},
		{Config{Arch: "unet"}, []int{1, 28, 28}, 1041601, "emb.0.weight"},
	} {
		n, err := New(c.cfg, c.shape)
		if err != nil {
			t.Fatal(err)
		}
		p := n.Params()
		if len(p.Data) != c.want {
			t.Errorf("%s %v: %d parameters, want %d", c.cfg.Arch, c.shape, len(p.Data), c.want)
		}
		if p.Names[0] != c.first {
			t.Errorf("%s: first parameter %q, want %q", c.cfg.Arch, p.Names[0], c.first)
		}
		off := 0
		seen := map[string]bool{}
		for i, name := range p.Names {
			if seen[name] {
				t.Errorf("duplicate name %q", name)
			}
			seen[name] = true
			if p.Offsets[i] != off {
				t.Errorf("%s: offset %d, want %d", name, p.Offsets[i], off)
			}
			off += prod(p.Shapes[i])
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		shape []int
		want  string // substring of the error; "" for none
	}{
		{Config{Arch: "mlp"}, []int{2}, ""},
		{Config{Arch: "unet"}, []int{3, 32, 32}, ""},
		{Config{Arch: "gan"}, []int{2}, "model.arch"},
		{Config{Arch: "mlp", Hidden: -1}, []int{2}, "model.hidden"},
		{Config{Arch: "mlp", Depth: -2}, []int{2}, "model.depth"},
		{Config{Arch: "mlp"}, []int{1, 28, 28}, "model.arch"},
		{Config{Arch: "unet"}, []int{1, 30, 28}, "divisible by 4"},
		{Config{Arch: "unet", Channels: []int{32, 64}}, []int{1, 28, 28}, "model.channels"},
		{Config{Arch: "unet", Channels: []int{32, 60, 128}}, []int{1, 28, 28}, "model.channels"},
		{Config{Arch: "unet", Emb: -1}, []int{1, 28, 28}, "model.emb"},
		{Config{Arch: "unet", Groups: -1}, []int{1, 28, 28}, "model.groups"},
	} {
		err := c.cfg.WithDefaults().Validate(c.shape)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v %v: %v", c.cfg, c.shape, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v %v: error %v, want one naming %q", c.cfg, c.shape, err, c.want)
		}
	}
}

// batchData draws x, z and σ (from the 10 reference levels) for a batch.
func batchData[T Float](key uint64, batch, dim int) (x, z, sigma []T) {
	r := keyrand.New(key)
	x, z, sigma = make([]T, batch*dim), make([]T, batch*dim), make([]T, batch)
	for i := range x {
		x[i], z[i] = T(r.Norm()), T(r.Norm())
	}
	for i := range sigma {
		sigma[i] = T(math.Pow(0.01, float64(r.IntN(10))/9))
	}
	return
}

var smallUNet = Config{Arch: "unet", Channels: []int{4, 8, 8}, Emb: 6, Groups: 2}

// TestNetGradients compares whole-network gradients (sum of per-sample DSM
// losses) with fourth-order finite differences in float64.
func TestNetGradients(t *testing.T) {
	for _, c := range []struct {
		name   string
		cfg    Config
		shape  []int
		batch  int
		perTen int // coordinates checked per tensor (0: all)
		only   []string
	}{
		{"mlp", Config{Arch: "mlp", Hidden: 8, Depth: 2}, []int{3}, 4, 0, nil},
		{"unet small rgb", smallUNet, []int{2, 8, 8}, 2, 4, nil},
		{"unet reference spot", Config{Arch: "unet"}, []int{1, 28, 28}, 1, 2,
			[]string{"emb.0.weight", "cin.weight", "r1.n1.weight", "r1.c1.bias", "r1.e.weight", "d2.weight", "m2.n2.bias", "u2c.weight", "r1u.c2.weight", "nout.weight", "cout.bias"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if testing.Short() && c.only != nil {
				t.Skip("reference widths in -short")
			}
			n, err := New64(c.cfg, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			n.Init(3)
			p := n.Params()
			// Move GroupNorm affine parameters off 1 and 0 so their gradients matter.
			r := keyrand.New(5)
			for i, name := range p.Names {
				if strings.Contains(name, ".n") || strings.HasPrefix(name, "nout") {
					d := p.Data[p.Offsets[i] : p.Offsets[i]+prod(p.Shapes[i])]
					for j := range d {
						d[j] += 0.3 * (2*r.Float64() - 1)
					}
				}
			}
			g, err := n.newGrad(c.batch, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			x, z, sigma := batchData[float64](7, c.batch, prod(c.shape))
			grad, losses := make([]float64, len(p.Data)), make([]float64, c.batch)
			if err := g.Run(x, z, sigma, grad, losses); err != nil {
				t.Fatal(err)
			}
			scratch := make([]float64, len(p.Data))
			total := func() float64 {
				if err := g.Run(x, z, sigma, scratch, losses); err != nil {
					t.Fatal(err)
				}
				var s float64
				for _, l := range losses {
					s += l
				}
				return s
			}
			for i, name := range p.Names {
				if c.only != nil && !slices.Contains(c.only, name) {
					continue
				}
				size := prod(p.Shapes[i])
				idx := make([]int, 0, size)
				if c.perTen == 0 || size <= c.perTen {
					for j := 0; j < size; j++ {
						idx = append(idx, j)
					}
				} else {
					for k := 0; k < c.perTen; k++ {
						idx = append(idx, r.IntN(size))
					}
				}
				an, num := make([]float64, len(idx)), make([]float64, len(idx))
				for k, j := range idx {
					an[k] = grad[p.Offsets[i]+j]
					num[k] = fd4(&p.Data[p.Offsets[i]+j], total)
				}
				if e := relErr(an, num); e > 1e-6 || math.IsNaN(e) {
					t.Errorf("%s: relative error %.3g\nanalytic %v\nnumeric  %v", name, e, an, num)
				}
			}
		})
	}
}

// TestRunReproducible: the same batch gives bitwise the same losses and
// gradients, also when other batches run in between (buffer aliasing shows
// here), and Run changes neither the parameters nor its inputs.
func TestRunReproducible(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		shape []int
		batch int
	}{
		{"mlp", Config{Arch: "mlp"}, []int{2}, 16},
		{"unet", smallUNet, []int{3, 8, 12}, 5},
		{"unet 1 sample", smallUNet, []int{1, 4, 4}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := New(c.cfg, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			n.Init(1)
			p := n.Params()
			before := slices.Clone(p.Data)
			g, err := n.newGrad(c.batch, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			dim := prod(c.shape)
			type out struct{ grad, loss []float32 }
			run := func(key uint64) out {
				x, z, s := batchData[float32](key, c.batch, dim)
				x0, z0, s0 := slices.Clone(x), slices.Clone(z), slices.Clone(s)
				o := out{make([]float32, len(p.Data)), make([]float32, c.batch)}
				if err := g.Run(x, z, s, o.grad, o.loss); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(x, x0) || !slices.Equal(z, z0) || !slices.Equal(s, s0) {
					t.Fatal("Run changed its inputs")
				}
				return o
			}
			a1, b1, a2, b2 := run(1), run(2), run(1), run(2)
			for _, pair := range [][2]out{{a1, a2}, {b1, b2}} {
				if !slices.Equal(pair[0].grad, pair[1].grad) || !slices.Equal(pair[0].loss, pair[1].loss) {
					t.Fatal("same batch, different results")
				}
			}
			if slices.Equal(a1.grad, b1.grad) {
				t.Fatal("different batches, same gradient")
			}
			if !slices.Equal(before, p.Data) {
				t.Fatal("Run changed the parameters")
			}
			// A fresh graph agrees bitwise.
			g2, err := n.newGrad(c.batch, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer g2.Close()
			x, z, s := batchData[float32](2, c.batch, dim)
			o := out{make([]float32, len(p.Data)), make([]float32, c.batch)}
			if err := g2.Run(x, z, s, o.grad, o.loss); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(o.grad, b1.grad) || !slices.Equal(o.loss, b1.loss) {
				t.Fatal("fresh graph disagrees")
			}
		})
	}
}

// TestScorerMatchesGrad: ½‖σ·Score(x̃, σ) + z‖² is the loss Grad reports.
func TestScorerMatchesGrad(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		shape []int
	}{
		{"mlp", Config{Arch: "mlp", Hidden: 16, Depth: 2}, []int{2}},
		{"unet", smallUNet, []int{3, 8, 8}},
	} {
		t.Run(c.name, func(t *testing.T) {
			const batch = 4
			n, err := New(c.cfg, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			n.Init(2)
			g, err := n.newGrad(batch, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			s, err := n.NewScorer(batch)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			dim := prod(c.shape)
			x, z, sigma := batchData[float32](3, batch, dim)
			losses := make([]float32, batch)
			if err := g.Run(x, z, sigma, make([]float32, len(n.Params().Data)), losses); err != nil {
				t.Fatal(err)
			}
			xt := make([]float32, len(x))
			for i := range xt {
				xt[i] = x[i] + sigma[i/dim]*z[i]
			}
			out := make([]float32, len(x))
			if err := s.Score(xt, sigma, out); err != nil {
				t.Fatal(err)
			}
			for b := 0; b < batch; b++ {
				var l float64
				for j := b * dim; j < (b+1)*dim; j++ {
					r := float64(sigma[b])*float64(out[j]) + float64(z[j])
					l += r * r / 2
				}
				if math.Abs(l-float64(losses[b])) > 1e-5*math.Max(1, l) {
					t.Errorf("sample %d: scorer loss %v, grad loss %v", b, l, losses[b])
				}
			}
		})
	}
}

func TestCloseAndErrors(t *testing.T) {
	n, err := New(smallUNet, []int{1, 4, 4})
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	g, err := n.newGrad(2, 2)
	if err != nil {
		t.Fatal(err)
	}
	s, err := n.NewScorer(2)
	if err != nil {
		t.Fatal(err)
	}
	x, z, sigma := batchData[float32](1, 2, 16)
	if err := g.Run(x, z, sigma, make([]float32, len(n.Params().Data)-1), make([]float32, 2)); err == nil || !strings.Contains(err.Error(), "grad") {
		t.Errorf("short grad buffer: %v", err)
	}
	if err := s.Score(x[:5], sigma, x); err == nil {
		t.Error("short x accepted")
	}
	if err := g.Run(x, z, sigma, make([]float32, len(n.Params().Data)), make([]float32, 2)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Run(x, z, sigma, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
	if err := s.Score(x, sigma, x); !errors.Is(err, ErrClosed) {
		t.Errorf("Score after Close: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > before {
		t.Errorf("%d goroutines after Close, %d before", got, before)
	}
	if _, err := n.newGrad(0, 2); err == nil {
		t.Error("batch 0 accepted")
	}
}

// TestFloat32MatchesFloat64: the float32 kernels (fast exp, log1p, SiLU,
// softplus) agree with the float64 network on losses and gradients.
func TestFloat32MatchesFloat64(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		shape []int
	}{
		{"mlp", Config{Arch: "mlp"}, []int{2}},
		{"unet", smallUNet, []int{3, 8, 8}},
	} {
		t.Run(c.name, func(t *testing.T) {
			const batch = 6
			n32, err := New(c.cfg, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			n64, err := New64(c.cfg, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			n32.Init(4)
			for i, v := range n32.Params().Data {
				n64.Params().Data[i] = float64(v)
			}
			g32, err := n32.newGrad(batch, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer g32.Close()
			g64, err := n64.newGrad(batch, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer g64.Close()
			x, z, s := batchData[float32](9, batch, prod(c.shape))
			x64, z64, s64 := make([]float64, len(x)), make([]float64, len(z)), make([]float64, len(s))
			for i := range x {
				x64[i], z64[i] = float64(x[i]), float64(z[i])
			}
			for i := range s {
				s64[i] = float64(s[i])
			}
			gr32, l32 := make([]float32, len(n32.Params().Data)), make([]float32, batch)
			gr64, l64 := make([]float64, len(gr32)), make([]float64, batch)
			if err := g32.Run(x, z, s, gr32, l32); err != nil {
				t.Fatal(err)
			}
			if err := g64.Run(x64, z64, s64, gr64, l64); err != nil {
				t.Fatal(err)
			}
			up := func(v []float32) []float64 {
				r := make([]float64, len(v))
				for i, x := range v {
					r[i] = float64(x)
				}
				return r
			}
			if e := relErr(up(l32), l64); e > 1e-5 {
				t.Errorf("losses differ by %.3g", e)
			}
			if e := relErr(up(gr32), gr64); e > 1e-4 {
				t.Errorf("gradients differ by %.3g", e)
			}
		})
	}
}

// TestConcurrentGrads: Grad and Scorer objects of one network run at the same
// time (sharing the parameters) and still give their sequential results.
func TestConcurrentGrads(t *testing.T) {
	n, err := New(smallUNet, []int{1, 8, 8})
	if err != nil {
		t.Fatal(err)
	}
	n.Init(6)
	np := len(n.Params().Data)
	type job struct {
		g          *GradOf[float32]
		s          *Scorer
		x, z, sg   []float32
		grad, loss []float32
	}
	var jobs []*job
	for _, bs := range []int{2, 3, 5} {
		g, err := n.newGrad(bs, 2)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		s, err := n.NewScorer(bs)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		x, z, sg := batchData[float32](uint64(bs), bs, 64)
		j := &job{g: g, s: s, x: x, z: z, sg: sg, grad: make([]float32, np), loss: make([]float32, bs)}
		if err := g.Run(x, z, sg, j.grad, j.loss); err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	errc := make(chan error, 2*len(jobs))
	for _, j := range jobs {
		go func() {
			grad, loss := make([]float32, np), make([]float32, len(j.loss))
			var err error
			for i := 0; i < 3 && err == nil; i++ {
				if err = j.g.Run(j.x, j.z, j.sg, grad, loss); err == nil && (!slices.Equal(grad, j.grad) || !slices.Equal(loss, j.loss)) {
					err = errors.New("concurrent run differs from sequential")
				}
			}
			errc <- err
		}()
		go func() {
			out := make([]float32, len(j.x))
			var err error
			for i := 0; i < 3 && err == nil; i++ {
				err = j.s.Score(j.x, j.sg, out)
			}
			errc <- err
		}()
	}
	for range 2 * len(jobs) {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// TestWeightsChangeBetweenRuns: graphs keep the weights' transforms (permuted, Winograd's
// U, packed) while the weights stay as they were, and make them again when any value
// changes, even the last of a layer: after a change, graphs built before it give a fresh
// graph's bits, with every convolution algorithm.
func TestWeightsChangeBetweenRuns(t *testing.T) {
	for _, algo := range []convAlgo{convDirect, convWino2, convWino4} {
		t.Run(algo.String(), func(t *testing.T) {
			const batch = 3
			shape := []int{3, 8, 8}
			n, err := New(smallUNet, shape)
			if err != nil {
				t.Fatal(err)
			}
			n.conv = convPolicy{forced: true, algo: algo}
			n.Init(3)
			np := len(n.Params().Data)
			x, z, sigma := batchData[float32](5, batch, prod(shape))
			type result struct{ score, grad, loss []float32 }
			build := func() (*Scorer, *GradOf[float32]) {
				s, err := n.NewScorer(batch)
				if err != nil {
					t.Fatal(err)
				}
				g, err := n.newGrad(batch, 2)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close(); g.Close() })
				return s, g
			}
			run := func(s *Scorer, g *GradOf[float32]) result {
				r := result{make([]float32, batch*prod(shape)), make([]float32, np), make([]float32, batch)}
				if err := s.Score(x, sigma, r.score); err != nil {
					t.Fatal(err)
				}
				if err := g.Run(x, z, sigma, r.grad, r.loss); err != nil {
					t.Fatal(err)
				}
				return r
			}
			same := func(what string, a, b result) {
				t.Helper()
				for _, p := range [][2][]float32{{a.score, b.score}, {a.grad, b.grad}, {a.loss, b.loss}} {
					for i := range p[0] {
						if math.Float32bits(p[0][i]) != math.Float32bits(p[1][i]) {
							t.Fatalf("%s: value %d: %v, want %v", what, i, p[0][i], p[1][i])
						}
					}
				}
			}
			s, g := build()
			first := run(s, g)
			same("unchanged weights", run(s, g), first)
			p := n.Params()
			convs := 0
			for i, sh := range p.Shapes {
				if len(sh) == 4 && sh[2] == 3 && sh[3] == 3 {
					last := p.Offsets[i] + prod(sh) - 1
					p.Data[last] += 0.25
					convs++
				}
			}
			if convs == 0 {
				t.Fatal("no 3×3 convolution weights")
			}
			after := run(s, g)
			s2, g2 := build()
			same("changed weights, graphs built before", after, run(s2, g2))
			if slices.Equal(after.score, first.score) {
				t.Fatal("the change made no difference to the scores: the test shows nothing")
			}
		})
	}
}
