package model

import (
	"fmt"
	"math"
)

// mlpJVP runs the MLP (mlpSpecs: [x, log σ] → (Linear → softplus) × depth →
// Linear) and its forward-mode derivative along K directions in x per sample
// by hand, then back-propagates through both to the parameters: the exact
// double backpropagation of SSM, SSM-VR and ESM, which gorgonia's graph
// cannot do reliably. It reads and writes the network's flat parameter and
// gradient layout, so the optimizer, all-reduce and checkpoints are unchanged.
//
// Row b of the primal pass is sample b; row b·K + k of the tangent pass is
// its direction k: a tangent through layer l is ȧ = ṫ·W_lᵀ and
// ṫ' = softplus'(a)⊙ȧ with softplus' = sigmoid, evaluated at the sample's a.
type mlpJVP[T Float] struct {
	net    *NetOf[T]
	loss   LossConfig
	B, K   int // samples, tangents per sample (particles, or D for esm)
	dim    int
	hidden int
	depth  int
	layers []int // index of layer l's weight in the parameters (its bias follows)

	h   [][]T // h[0] = rows [x̃, log σ] (B×(D+1)); h[l+1] = softplus(a_l) (B×H)
	sig [][]T // sigmoid(a_l) (B×H)
	t   [][]T // t[0] = directions (BK×D); t[l+1] = sig_l ⊙ ȧ_l (BK×H)
	ad  [][]T // ȧ_l (BK×H)
	pre []T   // a_l before softplus (B×H)
	o   []T   // raw output, s = o/σ (B×D)
	od  []T   // its tangents ȯ = J_o·v (BK×D)

	ob, odb []T // adjoints of o and ȯ
	hb, tb  []T // adjoints of h[l+1] and t[l+1]
	ab, adb []T // adjoints of a_l and ȧ_l
}

func (n *NetOf[T]) newMLPJVP(batch int, loss LossConfig) *mlpJVP[T] {
	c, D := n.cfg, n.dim
	K := loss.Particles
	if loss.Loss == LossESM {
		K = D
	}
	j := &mlpJVP[T]{net: n, loss: loss, B: batch, K: K, dim: D, hidden: c.Hidden, depth: c.Depth}
	for l := 0; l <= c.Depth; l++ {
		j.layers = append(j.layers, n.p.Index(fmt.Sprintf("f.%d.weight", 2*l)))
	}
	BK, H := batch*K, c.Hidden
	j.h = [][]T{make([]T, batch*(D+1))}
	j.t = [][]T{make([]T, BK*D)}
	for l := 0; l < c.Depth; l++ {
		j.h = append(j.h, make([]T, batch*H))
		j.sig = append(j.sig, make([]T, batch*H))
		j.t = append(j.t, make([]T, BK*H))
		j.ad = append(j.ad, make([]T, BK*H))
	}
	j.pre = make([]T, batch*H)
	j.o, j.od = make([]T, batch*D), make([]T, BK*D)
	j.ob, j.odb = make([]T, batch*D), make([]T, BK*D)
	j.hb, j.tb = make([]T, batch*H), make([]T, BK*H)
	j.ab, j.adb = make([]T, batch*H), make([]T, BK*H)
	if loss.Loss == LossESM {
		// The directions are the unit vectors: Σ_k e_kᵀ·J·e_k = tr J.
		for b := 0; b < batch; b++ {
			for k := 0; k < D; k++ {
				j.t[0][(b*D+k)*D+k] = 1
			}
		}
	}
	return j
}

// layer returns layer l's weight [out, in] and bias, and their gradient slices.
func (j *mlpJVP[T]) layer(l int, grad []T) (w, bias, dw, db []T) {
	p := j.net.p
	i := j.layers[l]
	wo, bo := p.Offsets[i], p.Offsets[i+1]
	nw, nb := prod(p.Shapes[i]), prod(p.Shapes[i+1])
	w, bias = p.Data[wo:wo+nw], p.Data[bo:bo+nb]
	if grad != nil {
		dw, db = grad[wo:wo+nw], grad[bo:bo+nb]
	}
	return
}

// forward computes o and ȯ for the rows in h[0] and t[0].
func (j *mlpJVP[T]) forward() {
	B, BK, D, H := j.B, j.B*j.K, j.dim, j.hidden
	in := D + 1
	for l := 0; l < j.depth; l++ {
		w, bias, _, _ := j.layer(l, nil)
		for b := 0; b < B; b++ {
			copy(j.pre[b*H:(b+1)*H], bias)
		}
		gemmT(false, true, B, H, in, 1, j.h[l], in, w, in, 1, j.pre, H)
		softplusRun(j.sig[l])(j.h[l+1], [][]T{j.pre})
		// The first layer's tangent input is 0 at log σ: only W's first D columns act.
		tin := H
		if l == 0 {
			tin = D
		}
		gemmT(false, true, BK, H, tin, 1, j.t[l], tin, w, in, 0, j.ad[l], H)
		for r := 0; r < BK; r++ {
			s := j.sig[l][(r/j.K)*H : (r/j.K+1)*H]
			ad, t := j.ad[l][r*H:(r+1)*H], j.t[l+1][r*H:(r+1)*H]
			for i, v := range ad {
				t[i] = s[i] * v
			}
		}
		in = H
	}
	w, bias, _, _ := j.layer(j.depth, nil)
	for b := 0; b < B; b++ {
		copy(j.o[b*D:(b+1)*D], bias)
	}
	gemmT(false, true, B, D, in, 1, j.h[j.depth], in, w, in, 1, j.o, D)
	gemmT(false, true, BK, D, in, 1, j.t[j.depth], in, w, in, 0, j.od, D)
}

// backward accumulates the parameter gradient of Σ_b L_b into grad, from the
// adjoints ob = ∂L/∂o and odb = ∂L/∂ȯ.
func (j *mlpJVP[T]) backward(grad []T) {
	B, K, D, H := j.B, j.K, j.dim, j.hidden
	BK := B * K
	L := j.depth
	w, _, dw, db := j.layer(L, grad)
	gemmT(true, false, D, H, B, 1, j.ob, D, j.h[L], H, 0, dw, H)
	gemmT(true, false, D, H, BK, 1, j.odb, D, j.t[L], H, 1, dw, H)
	colSums(db, j.ob, B, D)
	gemmT(false, false, B, H, D, 1, j.ob, D, w, H, 0, j.hb, H)
	gemmT(false, false, BK, H, D, 1, j.odb, D, w, H, 0, j.tb, H)
	for l := L - 1; l >= 0; l-- {
		// h' = softplus(a): ∂h'/∂a = sig. ṫ' = sig⊙ȧ: ∂ṫ'/∂ȧ = sig, ∂ṫ'/∂a = sig(1−sig)⊙ȧ.
		sig, ad := j.sig[l], j.ad[l]
		for b := 0; b < B; b++ {
			s, hb, ab := sig[b*H:(b+1)*H], j.hb[b*H:(b+1)*H], j.ab[b*H:(b+1)*H]
			for i := range ab {
				ab[i] = hb[i] * s[i]
			}
			for r := b * K; r < (b+1)*K; r++ {
				tb, adr, adb := j.tb[r*H:(r+1)*H], ad[r*H:(r+1)*H], j.adb[r*H:(r+1)*H]
				for i, g := range tb {
					ab[i] += g * adr[i] * s[i] * (1 - s[i])
					adb[i] = g * s[i]
				}
			}
		}
		w, _, dw, db := j.layer(l, grad)
		in, tin := H, H
		if l == 0 {
			in, tin = D+1, D
		}
		gemmT(true, false, H, in, B, 1, j.ab, H, j.h[l], in, 0, dw, in)
		gemmT(true, false, H, tin, BK, 1, j.adb, H, j.t[l], tin, 1, dw, in)
		colSums(db, j.ab, B, H)
		if l > 0 {
			gemmT(false, false, B, H, H, 1, j.ab, H, w, H, 0, j.hb, H)
			gemmT(false, false, BK, H, H, 1, j.adb, H, w, H, 0, j.tb, H)
		}
	}
}

// run is EstimatorOf.Run for ssm, ssm_vr and esm. With s = o/σ, λ = σ^p and
// α = 1/M over M particles (1 for esm's D unit vectors), sample b's loss is
//
//	L = σ^(p−1)·α·Σ_k v_kᵀ·ȯ_k + ½σ^(p−2)·Q,
//
// Q = α·Σ_k (v_kᵀo)² for ssm and ‖o‖² for ssm_vr and esm: λ times
// vᵀ∇ₓ(vᵀs) + ½(vᵀs)² (or ½‖s‖²), averaged over the particles.
func (j *mlpJVP[T]) run(x, z, v, sigma, grad, losses []T) error {
	B, K, D := j.B, j.K, j.dim
	if err := checkLens(j.loss.Loss+": ", B, wantLen[T]{"x", x, B * D}, wantLen[T]{"z", z, B * D}, wantLen[T]{"sigma", sigma, B},
		wantLen[T]{"grad", grad, len(j.net.p.Data)}, wantLen[T]{"losses", losses, B}); err != nil {
		return err
	}
	for b := 0; b < B; b++ {
		row := j.h[0][b*(D+1) : (b+1)*(D+1)]
		for i := 0; i < D; i++ {
			row[i] = x[b*D+i] + sigma[b]*z[b*D+i]
		}
		row[D] = T(math.Log(float64(sigma[b])))
	}
	if j.loss.Loss != LossESM {
		copy(j.t[0], v)
	}
	j.forward()
	alpha := 1 / T(K)
	if j.loss.Loss == LossESM {
		alpha = 1
	}
	for b := 0; b < B; b++ {
		s := float64(sigma[b])
		w1, w2 := T(lossWeight(s, j.loss.AnnealPower, 1)), T(lossWeight(s, j.loss.AnnealPower, 2))
		ob, o := j.ob[b*D:(b+1)*D], j.o[b*D:(b+1)*D]
		var tr, q T
		if j.loss.Loss == LossSSM {
			clear(ob)
		}
		for k := 0; k < K; k++ {
			r := b*K + k
			vk, odk, odb := j.t[0][r*D:(r+1)*D], j.od[r*D:(r+1)*D], j.odb[r*D:(r+1)*D]
			var vo T
			for i, e := range vk {
				tr += e * odk[i]
				vo += e * o[i]
				odb[i] = w1 * alpha * e
			}
			if j.loss.Loss == LossSSM {
				q += vo * vo
				for i, e := range vk {
					ob[i] += w2 * alpha * vo * e
				}
			}
		}
		if j.loss.Loss == LossSSM {
			q *= alpha
		} else {
			for i, e := range o {
				q += e * e
				ob[i] = w2 * e
			}
		}
		losses[b] = w1*alpha*tr + w2*q/2
	}
	j.backward(grad)
	return nil
}
