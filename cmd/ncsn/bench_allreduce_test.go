package main

import (
	"encoding/json"
	"testing"
)

// bench allreduce runs its member processes and reports the bytes they put on the wire:
// int4 sends about 7.5× fewer than raw float32 (4 bits and a bfloat16 scale per 64 values).
func TestBenchAllreduceCodecs(t *testing.T) {
	t.Setenv("NCSN_TEST_AS_MAIN", "1")
	wire := map[string]int64{}
	for _, tc := range []struct{ codec, compressor string }{{"none", "none"}, {"int4", "none"}, {"int4", "zstd"}} {
		out, errs, code := ncsn(t, "bench", "allreduce", "--procs", "2", "--mib", "0.25", "--iters", "2", "--warmup", "1",
			"--codec", tc.codec, "--compressor", tc.compressor)
		if code != 0 {
			t.Fatalf("%s+%s: exit %d: %s", tc.codec, tc.compressor, code, errs)
		}
		var r struct {
			Codec          string  `json:"codec"`
			Compressor     string  `json:"compressor"`
			Bytes          int     `json:"bytes"`
			WireBytesPerOp int64   `json:"wire_bytes_per_op"`
			MaxRelError    float64 `json:"max_rel_error"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%s+%s: %q: %v", tc.codec, tc.compressor, out, err)
		}
		if r.Codec != tc.codec || r.Compressor != tc.compressor || r.Bytes != 1<<18 {
			t.Fatalf("%s+%s: report %+v", tc.codec, tc.compressor, r)
		}
		t.Logf("%s+%s: %d wire bytes per op, max relative error %.3g", tc.codec, tc.compressor, r.WireBytesPerOp, r.MaxRelError)
		// Two quantisations on the way (a member's values, then the sum), each off by half
		// a step of its block's scale at most: on the bench's Gaussian data, under 2 × 1/14
		// of the largest sum.
		if tc.codec == "int4" && (r.MaxRelError == 0 || r.MaxRelError > 2.0/14) {
			t.Errorf("%s+%s: max relative error %g, want in (0, 1/7]", tc.codec, tc.compressor, r.MaxRelError)
		}
		wire[tc.codec+"+"+tc.compressor] = r.WireBytesPerOp
	}
	for _, c := range []string{"int4+none", "int4+zstd"} {
		if ratio := float64(wire["none+none"]) / float64(wire[c]); ratio < 7 {
			t.Errorf("%s: %d wire bytes per op, none %d: %.2f× fewer, want ≥ 7×", c, wire[c], wire["none+none"], ratio)
		}
	}
}
