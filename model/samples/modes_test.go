package samples

import (
	"testing"

	"github.com/ncsn/ncsn/internal/data"
)

func TestModeWeights(t *testing.T) {
	g, err := data.NewGMM([][]float64{{-5, -5}, {5, 5}}, []float64{0.2, 0.8}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if w := ModeWeights(g, []float32{5, 5, 4, 6, -5, -4, 0.1, 0}); w[0] != 0.25 || w[1] != 0.75 {
		t.Errorf("mode weights %v, want [0.25 0.75]", w)
	}
}
