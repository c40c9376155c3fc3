package worker

import "testing"

func TestRoundSig(t *testing.T) {
	for _, tc := range []struct{ x, want float64 }{{0.518263812, 0.5183}, {36414.2837, 36410}, {-0.00123456, -0.001235}, {0, 0}, {1, 1}} {
		if got := roundSig(tc.x, 4); got != tc.want {
			t.Errorf("roundSig(%v, 4) = %v, want %v", tc.x, got, tc.want)
		}
	}
}
