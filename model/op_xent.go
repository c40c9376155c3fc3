package model

import (
	"math"

	"gorgonia.org/gorgonia"
)

// softmaxXent adds the scalar Σ_b (log Σ_k e^{l_bk} − l_{b,y_b}), the summed
// softmax cross-entropy of logits l [B, K] against the class labels y, which
// it reads from labels (len B, each in [0, K)) when it runs. As side outputs
// it writes every sample's loss into losses and its argmax class into pred.
func (b *builder[T]) softmaxXent(logits *gorgonia.Node, labels []int, losses []T, pred []int) (*gorgonia.Node, error) {
	shape := logits.Shape().Clone()
	bs, k := shape[0], shape[1]
	prob := make([]T, bs*k) // softmax, left for the backward op of the same run
	fwd := func(s []T, in [][]T) {
		l := in[0]
		var tot float64
		for i := 0; i < bs; i++ {
			row, pr := l[i*k:(i+1)*k], prob[i*k:(i+1)*k]
			best := 0
			for j, v := range row {
				if v > row[best] {
					best = j
				}
			}
			// Shift by the maximum so that e^x cannot overflow.
			m := float64(row[best])
			var z float64
			for j, v := range row {
				e := math.Exp(float64(v) - m)
				pr[j] = T(e)
				z += e
			}
			for j := range pr {
				pr[j] = T(float64(pr[j]) / z)
			}
			li := m + math.Log(z) - float64(row[labels[i]])
			losses[i], pred[i] = T(li), best
			tot += li
		}
		s[0] = T(tot)
	}
	return apply[T]("xent", nil, nil, fwd, []bool{true},
		func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
			// dl = g·(softmax(l) − onehot(y)); out is an input only so that
			// this runs after the forward op has left the softmax in prob.
			dl, err := apply[T]("xent.bwd", shape, nil, func(dl []T, v [][]T) {
				g := v[0][0]
				for i := 0; i < bs; i++ {
					for j := 0; j < k; j++ {
						dl[i*k+j] = g * prob[i*k+j]
					}
					dl[i*k+labels[i]] -= g
				}
			}, nil, nil, grad, out)
			return gorgonia.Nodes{dl}, err
		}, logits)
}
