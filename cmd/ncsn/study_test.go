package main

import (
	"strings"
	"testing"
)

// The study through the command: a tiny budget, the table on stdout.
func TestStudyEstimators(t *testing.T) {
	out, errs, code := ncsn(t, "study", "estimators", "--steps", "2", "--n", "30", "--held-out", "30",
		"--set", "sample.steps_per_level=2", "--set", "train.global_batch=16", "--log-level", "error")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"| estimator | s/step |", "| dsm |", "| ssm |", "| ssm_vr |", "| fd_ssm |", "| esm |",
		"2 steps of batch 16", "plain Langevin at σ = 0.1", "annealed Langevin (10 levels × 2 steps"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"study"}, "want a study"},
		{[]string{"study", "nosuch"}, `unknown study "nosuch"`},
		{[]string{"study", "estimators", "--steps", "-1"}, "--steps"},
		{[]string{"study", "estimators", "--n", "0"}, "--n"},
		{[]string{"study", "estimators", "extra"}, "unexpected arguments"},
	} {
		if _, errs, code := ncsn(t, tc.args...); code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("ncsn %v: exit %d, %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
}
