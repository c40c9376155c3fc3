package model

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/keyrand"
)

// lossOf is DefaultLoss with the estimator and overrides.
func lossOf(name string, edit ...func(*LossConfig)) LossConfig {
	c := DefaultLoss()
	c.Loss = name
	for _, e := range edit {
		e(&c)
	}
	return c
}

func power(p float64) func(*LossConfig) { return func(c *LossConfig) { c.AnnealPower = p } }

func gaussian2(c *LossConfig) { c.Projection, c.Particles = "gaussian", 2 }

// projections draws an estimator's directions like the trainer does.
func projections[T Float](e *EstimatorOf[T], key uint64) []T {
	v := make([]T, e.Projections())
	r := keyrand.New(key, 0x76)
	for i := range v {
		if e.loss.Projection == "gaussian" {
			v[i] = T(r.Norm())
		} else {
			v[i] = T(1 - 2*float64(r.IntN(2)))
		}
	}
	return v
}

// TestEstimatorGradients compares every estimator's parameter gradient (the
// sum over the batch of per-sample losses) with fourth-order finite
// differences in float64, on both networks where the estimator runs.
func TestEstimatorGradients(t *testing.T) {
	mlp := Config{Arch: "mlp", Hidden: 8, Depth: 2}
	for _, c := range []struct {
		name   string
		cfg    Config
		shape  []int
		loss   LossConfig
		batch  int
		perTen int // coordinates checked per tensor (0: all)
	}{
		{"mlp dsm p=1", mlp, []int{3}, lossOf(LossDSM, power(1)), 4, 0},
		{"mlp ssm", mlp, []int{3}, lossOf(LossSSM), 4, 0},
		{"mlp ssm gaussian 2 particles p=0.5", mlp, []int{3}, lossOf(LossSSM, gaussian2, power(0.5)), 3, 0},
		{"mlp ssm_vr", mlp, []int{3}, lossOf(LossSSMVR), 4, 0},
		{"mlp ssm_vr gaussian 2 particles p=3", mlp, []int{3}, lossOf(LossSSMVR, gaussian2, power(3)), 3, 0},
		{"mlp esm", mlp, []int{3}, lossOf(LossESM), 4, 0},
		{"mlp esm depth 1 p=1", Config{Arch: "mlp", Hidden: 5, Depth: 1}, []int{2}, lossOf(LossESM, power(1)), 2, 0},
		{"mlp fd_ssm", mlp, []int{3}, lossOf(LossFDSSM), 4, 0},
		{"mlp fd_ssm gaussian 2 particles p=1", mlp, []int{3}, lossOf(LossFDSSM, gaussian2, power(1)), 3, 0},
		{"unet dsm p=1", smallUNet, []int{2, 8, 8}, lossOf(LossDSM, power(1)), 2, 4},
		{"unet fd_ssm", smallUNet, []int{2, 8, 8}, lossOf(LossFDSSM), 2, 4},
		{"unet fd_ssm gaussian 2 particles p=3", smallUNet, []int{1, 8, 8}, lossOf(LossFDSSM, gaussian2, power(3)), 1, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := New64(c.cfg, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			n.Init(3)
			p := n.Params()
			e, err := n.NewEstimator(c.loss, c.batch)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			x, z, sigma := batchData[float64](7, c.batch, prod(c.shape))
			v := projections(e, 8)
			grad, losses := make([]float64, len(p.Data)), make([]float64, c.batch)
			if err := e.Run(x, z, v, sigma, grad, losses); err != nil {
				t.Fatal(err)
			}
			scratch := make([]float64, len(p.Data))
			total := func() float64 {
				if err := e.Run(x, z, v, sigma, scratch, losses); err != nil {
					t.Fatal(err)
				}
				var s float64
				for _, l := range losses {
					s += l
				}
				return s
			}
			r := keyrand.New(5)
			for i, name := range p.Names {
				size := prod(p.Shapes[i])
				var idx []int
				for j := 0; j < size; j++ {
					if c.perTen == 0 || size <= c.perTen {
						idx = append(idx, j)
					}
				}
				for k := 0; len(idx) == 0 && k < c.perTen; k++ {
					idx = append(idx, r.IntN(size))
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

// TestJVPMatchesScorer: the hand-written MLP's output is the graph's σ·s, and
// its tangents are directional derivatives of the graph's output (central
// differences in float64), so the trace terms use the network's true Jacobian.
func TestJVPMatchesScorer(t *testing.T) {
	for _, loss := range []LossConfig{lossOf(LossSSM, gaussian2), lossOf(LossESM)} {
		t.Run(loss.Loss, func(t *testing.T) {
			const batch, dim = 3, 4
			n, err := New64(Config{Arch: "mlp", Hidden: 16, Depth: 3}, []int{dim})
			if err != nil {
				t.Fatal(err)
			}
			n.Init(2)
			j := n.newMLPJVP(batch, loss)
			sc, err := n.NewScorer(batch)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			x, _, sigma := batchData[float64](4, batch, dim)
			for b := 0; b < batch; b++ {
				copy(j.h[0][b*(dim+1):], x[b*dim:(b+1)*dim])
				j.h[0][b*(dim+1)+dim] = math.Log(sigma[b])
			}
			if loss.Loss != LossESM {
				r := keyrand.New(6)
				for i := range j.t[0] {
					j.t[0][i] = r.Norm()
				}
			}
			j.forward()
			score := func(x []float64) []float64 {
				out := make([]float64, len(x))
				if err := sc.Score(x, sigma, out); err != nil {
					t.Fatal(err)
				}
				for i := range out {
					out[i] *= sigma[i/dim]
				}
				return out
			}
			if e := relErr(j.o, score(x)); e > 1e-12 {
				t.Fatalf("output differs from the scorer's by %.3g", e)
			}
			const h = 1e-5
			for k := 0; k < j.K; k++ {
				xp, xm := slices.Clone(x), slices.Clone(x)
				var an []float64
				for b := 0; b < batch; b++ {
					r := b*j.K + k
					for i := 0; i < dim; i++ {
						xp[b*dim+i] += h * j.t[0][r*dim+i]
						xm[b*dim+i] -= h * j.t[0][r*dim+i]
					}
					an = append(an, j.od[r*dim:(r+1)*dim]...)
				}
				op, om := score(xp), score(xm)
				num := make([]float64, len(op))
				for i := range num {
					num[i] = (op[i] - om[i]) / (2 * h)
				}
				if e := relErr(an, num); e > 1e-7 {
					t.Errorf("direction %d: tangent differs from the finite difference by %.3g\nanalytic %v\nnumeric  %v", k, e, an, num)
				}
			}
		})
	}
}

// TestEstimatorFloat32MatchesFloat64: the float32 estimators (fast softplus,
// float32 GEMM) agree with float64 on losses and gradients.
func TestEstimatorFloat32MatchesFloat64(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		shape []int
		loss  LossConfig
		tol   float64
	}{
		{Config{Arch: "mlp"}, []int{2}, lossOf(LossSSM), 1e-4},
		{Config{Arch: "mlp"}, []int{2}, lossOf(LossSSMVR, gaussian2), 1e-4},
		{Config{Arch: "mlp"}, []int{2}, lossOf(LossESM, power(1)), 1e-4},
		// x̃ ± h·v rounds to float32 before the difference divides by 2h.
		{Config{Arch: "mlp"}, []int{2}, lossOf(LossFDSSM), 1e-3},
		{smallUNet, []int{1, 8, 8}, lossOf(LossFDSSM), 1e-3},
	} {
		t.Run(c.cfg.Arch+" "+c.loss.Loss, func(t *testing.T) {
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
			e32, err := n32.NewEstimator(c.loss, batch)
			if err != nil {
				t.Fatal(err)
			}
			defer e32.Close()
			e64, err := n64.NewEstimator(c.loss, batch)
			if err != nil {
				t.Fatal(err)
			}
			defer e64.Close()
			x, z, s := batchData[float32](9, batch, prod(c.shape))
			v := projections(e32, 3)
			up := func(v []float32) []float64 {
				r := make([]float64, len(v))
				for i, x := range v {
					r[i] = float64(x)
				}
				return r
			}
			gr32, l32 := make([]float32, len(n32.Params().Data)), make([]float32, batch)
			gr64, l64 := make([]float64, len(gr32)), make([]float64, batch)
			if err := e32.Run(x, z, v, s, gr32, l32); err != nil {
				t.Fatal(err)
			}
			if err := e64.Run(up(x), up(z), up(v), up(s), gr64, l64); err != nil {
				t.Fatal(err)
			}
			if e := relErr(up(l32), l64); e > c.tol {
				t.Errorf("losses differ by %.3g", e)
			}
			if e := relErr(up(gr32), gr64); e > c.tol {
				t.Errorf("gradients differ by %.3g", e)
			}
		})
	}
}

// TestAnnealPowerWeighting: with λ(σ) = σ^p every estimator's per-sample loss
// is σ^(p−2) times its loss at p = 2, and the gradient is the same weighted
// sum of the per-sample gradients.
func TestAnnealPowerWeighting(t *testing.T) {
	const batch, p = 3, 0.7
	for _, c := range []struct {
		cfg   Config
		shape []int
		loss  string
	}{
		{Config{Arch: "mlp", Hidden: 8, Depth: 2}, []int{2}, LossDSM},
		{Config{Arch: "mlp", Hidden: 8, Depth: 2}, []int{2}, LossSSM},
		{Config{Arch: "mlp", Hidden: 8, Depth: 2}, []int{2}, LossSSMVR},
		{Config{Arch: "mlp", Hidden: 8, Depth: 2}, []int{2}, LossESM},
		{Config{Arch: "mlp", Hidden: 8, Depth: 2}, []int{2}, LossFDSSM},
		{smallUNet, []int{1, 4, 4}, LossDSM},
		{smallUNet, []int{1, 4, 4}, LossFDSSM},
	} {
		t.Run(c.cfg.Arch+" "+c.loss, func(t *testing.T) {
			n, err := New64(c.cfg, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			n.Init(1)
			np, dim := len(n.Params().Data), prod(c.shape)
			weighted, err := n.NewEstimator(lossOf(c.loss, power(p)), batch)
			if err != nil {
				t.Fatal(err)
			}
			defer weighted.Close()
			one, err := n.NewEstimator(lossOf(c.loss), 1)
			if err != nil {
				t.Fatal(err)
			}
			defer one.Close()
			x, z, sigma := batchData[float64](2, batch, dim)
			sigma[0], sigma[1], sigma[2] = 0.05, 1, 7 // weights far from 1 both ways
			v := projections(weighted, 1)
			grad, losses := make([]float64, np), make([]float64, batch)
			if err := weighted.Run(x, z, v, sigma, grad, losses); err != nil {
				t.Fatal(err)
			}
			want, g1, l1 := make([]float64, np), make([]float64, np), make([]float64, 1)
			wantLoss := make([]float64, batch)
			per := len(v) / batch
			for b := 0; b < batch; b++ {
				if err := one.Run(x[b*dim:(b+1)*dim], z[b*dim:(b+1)*dim], v[b*per:(b+1)*per], sigma[b:b+1], g1, l1); err != nil {
					t.Fatal(err)
				}
				w := math.Pow(sigma[b], p-2)
				wantLoss[b] = w * l1[0]
				for i, g := range g1 {
					want[i] += w * g
				}
			}
			if e := relErr(losses, wantLoss); e > 1e-12 {
				t.Errorf("losses %v, want σ^(p−2)·(p=2 losses) = %v", losses, wantLoss)
			}
			if e := relErr(grad, want); e > 1e-10 {
				t.Errorf("gradient differs from the weighted per-sample sum by %.3g", e)
			}
		})
	}
}

// TestDSMEstimatorIsGrad: train.loss=dsm with the default weighting is the
// DSM gradient of newGrad: bit for bit on one core; on more, the batch is cut
// into a part per core, whose gradient sums add up in another order.
func TestDSMEstimatorIsGrad(t *testing.T) {
	n, err := New(Config{Arch: "mlp"}, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	n.Init(1)
	const batch = 16
	g, err := n.newGrad(batch, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	e, err := n.NewEstimator(DefaultLoss(), batch)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	x, z, s := batchData[float32](5, batch, 2)
	np := len(n.Params().Data)
	g1, l1, g2, l2 := make([]float32, np), make([]float32, batch), make([]float32, np), make([]float32, batch)
	if err := g.Run(x, z, s, g1, l1); err != nil {
		t.Fatal(err)
	}
	if err := e.Run(x, z, nil, s, g2, l2); err != nil {
		t.Fatal(err)
	}
	if workers(batch) == 1 {
		if !slices.Equal(g1, g2) || !slices.Equal(l1, l2) {
			t.Fatal("dsm estimator differs from newGrad")
		}
		return
	}
	for i := range g1 {
		if d := math.Abs(float64(g1[i] - g2[i])); d > 1e-5*math.Max(1, math.Abs(float64(g1[i]))) {
			t.Fatalf("gradient %d: estimator %v, newGrad %v", i, g2[i], g1[i])
		}
	}
	for b := range l1 {
		if d := math.Abs(float64(l1[b] - l2[b])); d > 1e-5*math.Max(1, math.Abs(float64(l1[b]))) {
			t.Fatalf("loss %d: estimator %v, newGrad %v", b, l2[b], l1[b])
		}
	}
}

// TestObjectivesMatchScoreError: on the paper's mixture, whose noised score
// ∇log p_σ is analytic, every estimator's objective is in expectation
// ½λ(σ)·E‖s_θ − ∇log p_σ‖² plus a constant independent of θ:
// −½λ·E‖∇log p_σ‖² for the score-matching ones, and that plus ½λ·D/σ² for
// DSM. Checked per sample at the same x̃ (so most of the noise cancels), for
// an untrained network and one trained briefly with DSM, at two levels.
func TestObjectivesMatchScoreError(t *testing.T) {
	g, err := data.NewGMM([][]float64{{-5, -5}, {5, 5}}, []float64{0.2, 0.8}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Arch: "mlp", Hidden: 32, Depth: 2}
	const dim, n = 2, 4000
	init, err := New64(cfg, []int{dim})
	if err != nil {
		t.Fatal(err)
	}
	init.Init(1)
	trained, err := New64(cfg, []int{dim})
	if err != nil {
		t.Fatal(err)
	}
	trained.Init(1)
	trainDSM(t, trained, g, 300)

	pts := g.Sample(1, data.Test, n)
	x := make([]float64, n*dim)
	buf := make([]float32, dim)
	for i := 0; i < n; i++ {
		pts.Example(i, buf)
		x[i*dim], x[i*dim+1] = float64(buf[0]), float64(buf[1])
	}
	for _, net := range []struct {
		name string
		n    *Net64
	}{{"untrained", init}, {"trained", trained}} {
		sc, err := net.n.NewScorer(n)
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		for _, sg := range []float64{0.3, 3} {
			for _, loss := range []LossConfig{
				lossOf(LossDSM), lossOf(LossSSM), lossOf(LossSSMVR, gaussian2), lossOf(LossESM, power(1)),
				lossOf(LossFDSSM, func(c *LossConfig) { c.FDEps = 0.01 }),
			} {
				e, err := net.n.NewEstimator(loss, n)
				if err != nil {
					t.Fatal(err)
				}
				r := keyrand.New(11, uint64(sg*10))
				z, sigma := make([]float64, n*dim), make([]float64, n)
				for i := range z {
					z[i] = r.Norm()
				}
				for i := range sigma {
					sigma[i] = sg
				}
				losses := make([]float64, n)
				if err := e.Run(x, z, projections(e, 12), sigma, make([]float64, len(net.n.Params().Data)), losses); err != nil {
					t.Fatal(err)
				}
				e.Close()
				xt, s := make([]float64, n*dim), make([]float64, n*dim)
				for i := range xt {
					xt[i] = x[i] + sg*z[i]
				}
				if err := sc.Score(xt, sigma, s); err != nil {
					t.Fatal(err)
				}
				lam := math.Pow(sg, loss.AnnealPower)
				var mean, sq, errTerm float64
				exact := make([]float64, dim)
				for b := 0; b < n; b++ {
					g.Score(xt[b*dim:(b+1)*dim], sg, exact)
					var d2, e2 float64
					for j, ex := range exact {
						d := s[b*dim+j] - ex
						d2 += d * d
						e2 += ex * ex
					}
					want := lam * (d2 - e2) / 2
					if loss.Loss == LossDSM {
						want += lam * dim / (2 * sg * sg)
					}
					diff := losses[b] - want
					mean += diff
					sq += diff * diff
					errTerm += lam * d2 / 2
				}
				mean /= n
				se := math.Sqrt((sq/n - mean*mean) / n)
				errTerm /= n
				t.Logf("%s σ=%g %s: objective − prediction = %.4f ± %.4f (½λ·score error %.3f)", net.name, sg, loss.Loss, mean, se, errTerm)
				if math.Abs(mean) > 4*se+1e-3*errTerm {
					t.Errorf("%s σ=%g %s: objective − prediction = %.4f ± %.4f, want 0", net.name, sg, loss.Loss, mean, se)
				}
			}
		}
	}
}

// trainDSM runs Adam on the DSM loss over the mixture's training points.
func trainDSM(t *testing.T, n *Net64, g *data.GMM, steps int) {
	t.Helper()
	const batch = 128
	levels := NoiseConfig{SigmaMax: 5, SigmaMin: 0.2, Levels: 5}.Sigmas()
	gr, err := n.newGrad(batch, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer gr.Close()
	p := n.Params().Data
	p32 := make([]float32, len(p))
	for i, v := range p {
		p32[i] = float32(v)
	}
	st, err := NewState(p32, AdamConfig{LR: 3e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, 0)
	if err != nil {
		t.Fatal(err)
	}
	pts := g.Sample(2, data.Train, steps*batch)
	buf := make([]float32, 2)
	x, z, sigma := make([]float64, batch*2), make([]float64, batch*2), make([]float64, batch)
	grad, g32, losses := make([]float64, len(p)), make([]float32, len(p)), make([]float64, batch)
	r := keyrand.New(3)
	for s := 0; s < steps; s++ {
		for b := 0; b < batch; b++ {
			pts.Example(s*batch+b, buf)
			x[2*b], x[2*b+1] = float64(buf[0]), float64(buf[1])
			z[2*b], z[2*b+1] = r.Norm(), r.Norm()
			sigma[b] = levels[r.IntN(len(levels))]
		}
		if err := gr.Run(x, z, sigma, grad, losses); err != nil {
			t.Fatal(err)
		}
		for i, v := range grad {
			g32[i] = float32(v)
		}
		if _, err := st.Apply(g32, batch); err != nil {
			t.Fatal(err)
		}
		for i, v := range st.Params {
			p[i] = float64(v)
		}
	}
}

// TestEstimatorRefusals: what a network cannot run is refused up front, with
// the key to change and what to use instead.
func TestEstimatorRefusals(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		shape []int
		loss  LossConfig
		want  []string
	}{
		{smallUNet, []int{1, 8, 8}, lossOf(LossSSM), []string{"train.loss", "ssm", "double backpropagation", "fd_ssm"}},
		{smallUNet, []int{1, 8, 8}, lossOf(LossSSMVR), []string{"train.loss", "ssm_vr", "fd_ssm"}},
		{smallUNet, []int{1, 4, 4}, lossOf(LossESM), []string{"train.loss", "esm", "fd_ssm"}},
		{Config{Arch: "mlp"}, []int{17}, lossOf(LossESM), []string{"train.loss", "esm", "D = 17", "D <= 16", "ssm_vr or fd_ssm"}},
		{Config{Arch: "mlp"}, []int{2}, lossOf("sm"), []string{"train.loss", `"sm"`, "dsm, ssm, ssm_vr, fd_ssm or esm"}},
		{Config{Arch: "mlp"}, []int{2}, lossOf(LossDSM, power(-1)), []string{"train.anneal_power"}},
		{Config{Arch: "mlp"}, []int{2}, lossOf(LossDSM, power(math.NaN())), []string{"train.anneal_power"}},
		{Config{Arch: "mlp"}, []int{2}, lossOf(LossSSM, func(c *LossConfig) { c.Projection = "sphere" }), []string{"train.projection"}},
		{Config{Arch: "mlp"}, []int{2}, lossOf(LossSSM, func(c *LossConfig) { c.Particles = 0 }), []string{"train.n_particles"}},
		{Config{Arch: "mlp"}, []int{2}, lossOf(LossFDSSM, func(c *LossConfig) { c.FDEps = 0 }), []string{"train.fd_eps"}},
	} {
		n, err := New(c.cfg, c.shape)
		if err != nil {
			t.Fatal(err)
		}
		_, err = n.NewEstimator(c.loss, 2)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s %v %+v: error %v, want one containing %q", c.cfg.Arch, c.shape, c.loss, err, w)
			}
		}
	}
	// What the refusals leave open runs.
	for _, c := range []struct {
		cfg   Config
		shape []int
		loss  string
	}{{Config{Arch: "mlp"}, []int{16}, LossESM}, {smallUNet, []int{1, 4, 4}, LossFDSSM}, {smallUNet, []int{1, 4, 4}, LossDSM}} {
		n, err := New(c.cfg, c.shape)
		if err != nil {
			t.Fatal(err)
		}
		e, err := n.NewEstimator(lossOf(c.loss), 2)
		if err != nil {
			t.Errorf("%s %v %s: %v", c.cfg.Arch, c.shape, c.loss, err)
			continue
		}
		e.Close()
	}
}

func TestEstimatorRunErrors(t *testing.T) {
	n, err := New(Config{Arch: "mlp", Hidden: 4, Depth: 1}, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	np := len(n.Params().Data)
	for _, loss := range []string{LossDSM, LossSSM, LossESM, LossFDSSM} {
		e, err := n.NewEstimator(lossOf(loss), 2)
		if err != nil {
			t.Fatal(err)
		}
		x, z, s := batchData[float32](1, 2, 2)
		v := make([]float32, e.Projections())
		if err := e.Run(x, z, append(v, 1), s, make([]float32, np), make([]float32, 2)); err == nil || !strings.Contains(err.Error(), "v has") {
			t.Errorf("%s: long v: %v", loss, err)
		}
		if err := e.Run(x[:3], z, v, s, make([]float32, np), make([]float32, 2)); err == nil || !strings.Contains(err.Error(), "x has 3") {
			t.Errorf("%s: short x: %v", loss, err)
		}
		if err := e.Run(x, z, v, s, make([]float32, np-1), make([]float32, 2)); err == nil || !strings.Contains(err.Error(), "grad") {
			t.Errorf("%s: short grad: %v", loss, err)
		}
		for i := 0; i < 2; i++ {
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Run(x, z, v, s, make([]float32, np), make([]float32, 2)); err != ErrClosed {
			t.Errorf("%s: Run after Close: %v", loss, err)
		}
	}
}

// TestProjectKeyedByPosition: directions depend on (seed, step, position)
// only, are ±1 or standard normal, and leave Draw's σ and z as they were.
func TestProjectKeyedByPosition(t *testing.T) {
	d := &Noise{Seed: 5, Sigmas: []float64{1, 0.1}}
	const per = 6
	for _, gauss := range []bool{false, true} {
		full := make([]float32, 8*per)
		d.Project(3, 0, 8, gauss, full)
		part := make([]float32, 5*per)
		d.Project(3, 3, 5, gauss, part)
		if !slices.Equal(part, full[3*per:]) {
			t.Fatalf("gaussian %v: positions 3..7 drawn alone differ from the full draw", gauss)
		}
		many := make([]float32, 4000*per)
		d.Project(4, 0, 4000, gauss, many)
		var m1, m2 float64
		for _, v := range many {
			if !gauss && v != 1 && v != -1 {
				t.Fatalf("rademacher value %v", v)
			}
			m1 += float64(v)
			m2 += float64(v) * float64(v)
		}
		m1 /= float64(len(many))
		m2 /= float64(len(many))
		if math.Abs(m1) > 0.02 || math.Abs(m2-1) > 0.03 {
			t.Errorf("gaussian %v: mean %.3f, second moment %.3f; want 0 and 1", gauss, m1, m2)
		}
	}
	// The directions come from a stream of their own: Gaussian directions are
	// not the noise z drawn at the same (step, position).
	lv, s, z := make([]int, 2), make([]float32, 2), make([]float32, 2*per)
	d.Draw(3, 0, lv, s, z)
	v := make([]float32, 2*per)
	d.Project(3, 0, 2, true, v)
	if slices.Equal(z, v) {
		t.Fatal("Project drew the same values as Draw's noise")
	}
}
