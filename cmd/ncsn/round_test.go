package main

import (
	"strings"
	"testing"
)

func TestRoundSig(t *testing.T) {
	for _, tc := range []struct{ x, want float64 }{{0.518263812, 0.5183}, {36414.2837, 36410}, {-0.00123456, -0.001235}, {0, 0}, {1, 1}} {
		if got := roundSig(tc.x, 4); got != tc.want {
			t.Errorf("roundSig(%v, 4) = %v, want %v", tc.x, got, tc.want)
		}
	}
}

// Text logs show floats to 4 significant digits; JSON logs keep every digit.
func TestLogRoundsFloatsForPeople(t *testing.T) {
	for _, tc := range []struct{ format, want string }{{"text", "loss=0.5183"}, {"json", `"loss":0.518263812`}} {
		format, level := tc.format, "info"
		var b strings.Builder
		log, err := (&logFlags{format: &format, level: &level}).logger(&b)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("step", "loss", 0.518263812, "step", 7)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%s: %q, want %s", tc.format, b.String(), tc.want)
		}
	}
}
