package worker

import (
	"math"
	"slices"
	"testing"

	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// TestEstimatorStepSplits: with every train.loss, a step's gradient and loss
// statistics do not depend on how workers split the global batch: σ, z and the
// directions v are keyed by global position, so two slices sum to the whole.
func TestEstimatorStepSplits(t *testing.T) {
	for _, c := range []struct {
		loss string
		sets []string
	}{
		{"ssm", []string{"data.name=gmm", "train.projection=gaussian", "train.n_particles=2"}},
		{"ssm_vr", []string{"data.name=gmm"}},
		{"esm", []string{"data.name=gmm", "train.anneal_power=1"}},
		{"fd_ssm", []string{"data.name=gmm"}},
		{"fd_ssm", []string{"model.channels=[4,8,8]", "model.groups=2", "data.image_size=8"}},
	} {
		rc, err := config.Load("", append(c.sets, "train.loss="+c.loss, "train.global_batch=12"))
		if err != nil {
			t.Fatal(err)
		}
		if rc, _, err = rc.Resolve(); err != nil { // the image defaults are NCSNv2's auto schedule
			t.Fatal(err)
		}
		t.Run(c.loss+" "+rc.Model.Arch, func(t *testing.T) {
			r, err := newReplica(rc)
			if err != nil {
				t.Fatal(err)
			}
			defer r.trainer.Close()
			L := len(r.sigmas)
			step := func(lo, hi int) ([]float32, model.LossStats) {
				g, s := make([]float32, len(r.state.Params)), model.NewLossStats(L)
				if err := r.trainer.Compute(4, lo, hi, g, s); err != nil {
					t.Fatal(err)
				}
				return g, s
			}
			whole, ws := step(0, 12)
			again, as := step(0, 12)
			if !slices.Equal(whole, again) || !slices.Equal(ws.Sum, as.Sum) {
				t.Fatal("the same step twice differs")
			}
			a, sa := step(0, 5)
			b, sb := step(5, 12)
			var d, m float64
			for i := range whole {
				d = math.Max(d, math.Abs(float64(a[i]+b[i]-whole[i])))
				m = math.Max(m, math.Abs(float64(whole[i])))
			}
			if d > 1e-5*m || m == 0 {
				t.Errorf("slices 0..5 + 5..12 differ from the whole batch by %.3g (max |g| %.3g)", d, m)
			}
			for i := 0; i < L; i++ {
				if sa.Count[i]+sb.Count[i] != ws.Count[i] || math.Abs(sa.Sum[i]+sb.Sum[i]-ws.Sum[i]) > 1e-5*(1+math.Abs(ws.Sum[i])) {
					t.Errorf("level %d: slices %v+%v (%v+%v samples), whole %v (%v)", i, sa.Sum[i], sb.Sum[i], sa.Count[i], sb.Count[i], ws.Sum[i], ws.Count[i])
				}
			}
		})
	}
}
