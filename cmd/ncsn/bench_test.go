package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// benchLines runs ncsn bench and decodes its JSON lines, the summary last.
func benchLines(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	out, errs, code := ncsn(t, append([]string{"bench"}, args...)...)
	if code != 0 {
		t.Fatalf("ncsn bench %v: exit %d: %s", args, code, errs)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) < 2 || lines[len(lines)-1]["summary"] == nil {
		t.Fatalf("ncsn bench %v: want result lines and a summary, got %q", args, out)
	}
	return lines
}

// checkFields fails unless r has each field, positive where numeric.
func checkFields(t *testing.T, r map[string]any, fields ...string) {
	t.Helper()
	for _, f := range fields {
		switch v := r[f].(type) {
		case float64:
			if !(v > 0) {
				t.Errorf("%s = %v in %v, want > 0", f, v, r)
			}
		case string:
			if v == "" {
				t.Errorf("%s empty in %v", f, r)
			}
		default:
			t.Errorf("no %s in %v", f, r)
		}
	}
}

// The fields of torch_ref.py sample, and the heap figures.
func TestBenchSample(t *testing.T) {
	for _, tc := range []struct {
		net, batch string
	}{{"mlp", "50"}, {"unet", "2"}} {
		lines := benchLines(t, "sample", "--net", tc.net, "--batch", tc.batch, "--iters", "2")
		r := lines[0]
		checkFields(t, r, "workload", "net", "batch", "sec_per_step", "sample_steps_per_sec", "cpu_sec_per_step",
			"threads", "iters", "heap_mib_after_warmup", "heap_mib_max", "heap_mib_at_end")
		if r["net"] != tc.net || r["workload"] != "sample" || r["batch"] != map[string]float64{"mlp": 50, "unet": 2}[tc.net] {
			t.Errorf("result %v for --net %s --batch %s", r, tc.net, tc.batch)
		}
		if _, ok := r["alloc_bytes_per_step"].(float64); !ok {
			t.Errorf("no alloc_bytes_per_step in %v", r)
		}
	}
}

// The fields of torch_ref.py train's summary, on a tiny U-Net over the
// built-in images so that no data files are needed.
func TestBenchTrain(t *testing.T) {
	lines := benchLines(t, "train", "--width", "4", "--batch", "4", "--steps", "3", "--warmup", "1", "--set", "data.name=synthetic")
	r := lines[0]
	checkFields(t, r, "workload", "net", "width", "batch", "steps", "params", "loss", "train_seconds", "samples_per_sec",
		"sec_per_step", "cpu_sec_per_step", "threads", "warmup", "heap_mib_after_warmup", "heap_mib_max", "heap_mib_at_end")
	if r["workload"] != "train" || r["width"] != 4.0 || r["batch"] != 4.0 || r["steps"] != 3.0 {
		t.Errorf("result %v", r)
	}
	if _, errs, code := ncsn(t, "bench", "train", "--set", "train.lr=-1"); code != 2 || !strings.Contains(errs, "train.lr") {
		t.Errorf("bad --set: exit %d, %s", code, errs)
	}
}

// bench compute and bench sample pick their workloads alike: all of torch_ref.py's by
// default, one with --net, whose batch --batch sets.
func TestBenchPickWork(t *testing.T) {
	all := []benchWork{{"mlp", 512, 200}, {"unet", 64, 10}, {"unet", 128, 10}}
	for _, tc := range []struct {
		net   string
		batch int
		want  []benchWork
		err   string
	}{
		{"", 0, all, ""},
		{"unet", 0, []benchWork{{"unet", 64, 10}}, ""},
		{"mlp", 8, []benchWork{{"mlp", 8, 200}}, ""},
		{"", 8, nil, "--batch goes with --net"},
		{"cnn", 0, nil, `--net "cnn"`},
	} {
		got, err := pickWork(all, tc.net, tc.batch)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("pickWork(%q, %d): error %v, want %q", tc.net, tc.batch, err, tc.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("pickWork(%q, %d) = %v, %v; want %v", tc.net, tc.batch, got, err, tc.want)
		}
	}
	lines := benchLines(t, "compute", "--net", "mlp", "--batch", "8", "--iters", "1")
	checkFields(t, lines[0], "net", "batch", "params", "sec_per_step", "samples_per_sec", "gflops")
	if lines[0]["net"] != "mlp" || lines[0]["batch"] != 8.0 || lines[1]["summary"].(map[string]any)["mlp_b8_samples_per_sec"] == nil {
		t.Errorf("bench compute --net mlp --batch 8: %v", lines)
	}
	for _, args := range [][]string{{"compute", "--batch", "8"}, {"sample", "--batch", "8"}, {"sample", "--net", "cnn"}} {
		if _, errs, code := ncsn(t, append([]string{"bench"}, args...)...); code != 2 || !strings.Contains(errs, "--") {
			t.Errorf("bench %v: exit %d, %s; want a usage error", args, code, errs)
		}
	}
}
