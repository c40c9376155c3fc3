package model

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ncsn/ncsn/internal/safetensors"
)

func testState(t *testing.T, seed uint64) (*Net, *State) {
	t.Helper()
	n, err := New(Config{Arch: "mlp", Hidden: 8, Depth: 2}, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	n.Init(seed)
	s, err := NewState(n.Params().Data, AdamConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, 0.9)
	if err != nil {
		t.Fatal(err)
	}
	g := make([]float32, len(s.Params))
	for i := range g {
		g[i] = float32(i%7) - 3
	}
	for i := 0; i < 3; i++ {
		if _, err := s.Apply(slices.Clone(g), 4); err != nil {
			t.Fatal(err)
		}
	}
	return n, s
}

func TestCheckpointRoundTrip(t *testing.T) {
	n, s := testState(t, 1)
	path := filepath.Join(t.TempDir(), "c.safetensors")
	if err := WriteCheckpoint(path, NewCheckpoint(n.Params(), s, map[string]string{MetaConfig: `{"a":1}`})); err != nil {
		t.Fatal(err)
	}
	c, err := ReadCheckpoint(path, n.Params())
	if err != nil {
		t.Fatal(err)
	}
	n2, s2 := testState(t, 2)
	if s2.Hash() == s.Hash() {
		t.Fatal("different seeds give equal states")
	}
	if err := c.Restore(s2); err != nil {
		t.Fatal(err)
	}
	if s2.Hash() != s.Hash() || c.Meta[MetaConfig] != `{"a":1}` || c.Step != 3 {
		t.Fatalf("restored state differs (step %d, meta %v)", c.Step, c.Meta)
	}
	// Any safetensors reader sees the documented tensor names.
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"param/", "ema/", "adam_m/", "adam_v/"} {
		if _, ok := f.Tensor(p + n2.Params().Names[0]); !ok {
			t.Fatalf("no tensor %s%s", p, n2.Params().Names[0])
		}
	}
	// Another architecture is refused.
	other, _ := New(Config{Arch: "mlp", Hidden: 9, Depth: 2}, []int{2})
	if _, err := ReadCheckpoint(path, other.Params()); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Fatalf("other architecture: err = %v", err)
	}
}

func TestCheckpointDirKeepsNewestAndSkipsCorrupt(t *testing.T) {
	n, s := testState(t, 1)
	d := &CheckpointDir{Dir: t.TempDir(), Keep: 2}
	var hashes [][32]byte
	g := make([]float32, len(s.Params))
	for i := 0; i < 4; i++ {
		g[i] = 1
		if _, err := s.Apply(slices.Clone(g), 1); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Save(NewCheckpoint(n.Params(), s, nil)); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, s.Hash())
	}
	steps, _ := d.steps()
	if !slices.Equal(steps, []int64{6, 7}) {
		t.Fatalf("kept steps %v, want [6 7]", steps)
	}
	// Flip a byte in the newest file's data: Latest falls back to step 6.
	newest := filepath.Join(d.Dir, CheckpointName(7))
	b, _ := os.ReadFile(newest)
	b[len(b)-3] ^= 0xff
	if err := os.WriteFile(newest, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCheckpoint(newest, n.Params()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt file: err = %v, want ErrCorrupt", err)
	}
	c, path, err := d.Latest(n.Params())
	if err != nil {
		t.Fatal(err)
	}
	if c.Step != 6 || !strings.HasSuffix(path, CheckpointName(6)) {
		t.Fatalf("latest = step %d at %s, want 6", c.Step, path)
	}
	_, s2 := testState(t, 3)
	if err := c.Restore(s2); err != nil || s2.Hash() != hashes[2] {
		t.Fatalf("restored step 6 does not match what was saved (err %v)", err)
	}
	if _, _, err := (&CheckpointDir{Dir: t.TempDir()}).Latest(n.Params()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty dir: err = %v", err)
	}
}

// A crash at any stage of a write never leaves the newest loadable checkpoint corrupt.
func TestCheckpointWriteFaults(t *testing.T) {
	for _, stage := range safetensors.Stages {
		t.Run(stage.String(), func(t *testing.T) {
			n, s := testState(t, 1)
			d := &CheckpointDir{Dir: t.TempDir(), Keep: 3}
			if _, err := d.Save(NewCheckpoint(n.Params(), s, nil)); err != nil {
				t.Fatal(err)
			}
			before := s.Hash()
			g := make([]float32, len(s.Params))
			g[0] = 1
			if _, err := s.Apply(g, 1); err != nil {
				t.Fatal(err)
			}
			d.Writer.FaultHook = func(st safetensors.Stage) error {
				if st == stage {
					return fmt.Errorf("injected fault at %s", st)
				}
				return nil
			}
			if _, err := d.Save(NewCheckpoint(n.Params(), s, nil)); err == nil {
				t.Fatal("fault not reported")
			}
			c, _, err := d.Latest(n.Params())
			if err != nil {
				t.Fatal(err)
			}
			_, s2 := testState(t, 5)
			if err := c.Restore(s2); err != nil {
				t.Fatal(err)
			}
			// Either the old checkpoint or (fault after the rename) the complete new one.
			if h := s2.Hash(); h != before && h != s.Hash() {
				t.Fatalf("loaded a state that was never saved (step %d)", c.Step)
			}
			if stage < safetensors.StageRenamed && c.Step != 3 {
				t.Fatalf("fault before rename, yet step %d loaded", c.Step)
			}
		})
	}
}

// TestCheckpointResume: a run's checkpoints carry its metadata, and a run resumes only
// from its own.
func TestCheckpointResume(t *testing.T) {
	n, s := testState(t, 1)
	d := &CheckpointDir{Dir: t.TempDir(), Keep: 2}
	run := RunMeta{Config: []byte(`{"a":1}`), Seed: 7, Batch: 4}
	_, fresh := testState(t, 2)
	if _, err := d.Resume(n.Params(), fresh, run); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty folder: err = %v, want os.ErrNotExist", err)
	}
	path, err := d.Save(NewRunCheckpoint(n.Params(), s, run))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ReadCheckpoint(path, n.Params())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{MetaFormat: CheckpointFormat, MetaStep: "3", MetaConfig: `{"a":1}`, MetaSeed: "7", MetaDataPosition: "12"}
	for k, v := range want {
		if c.Meta[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, c.Meta[k], v)
		}
	}
	for _, tc := range []struct {
		name string
		run  RunMeta
		err  string
	}{
		{"same run", run, ""},
		{"another config", RunMeta{Config: []byte(`{"a":2}`)}, "belongs to another run: its config differs"},
		{"SameRun decides", RunMeta{Config: []byte(`{"a":2}`), SameRun: func([]byte) error { return nil }}, ""},
		{"SameRun refuses", RunMeta{Config: []byte(`{"a":1}`), SameRun: func(b []byte) error { return fmt.Errorf("not %s", b) }}, `not {"a":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, st := testState(t, 2)
			before := st.Hash()
			got, err := d.Resume(n.Params(), st, tc.run)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				if st.Hash() != before {
					t.Fatal("a refused resume changed the state")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != path || st.Hash() != s.Hash() {
				t.Fatalf("resumed %s with hash equal %v; want %s, equal", got, st.Hash() == s.Hash(), path)
			}
		})
	}
}

// TestCopyState: a copy shares no buffer with its source, keeps a missing EMA missing,
// and reuses the buffers it is given.
func TestCopyState(t *testing.T) {
	_, s := testState(t, 1)
	c := CopyState(nil, s)
	if c.Hash() != s.Hash() {
		t.Fatal("the copy differs")
	}
	g := make([]float32, len(s.Params))
	g[0] = 1
	if _, err := s.Apply(g, 1); err != nil {
		t.Fatal(err)
	}
	if c.Hash() == s.Hash() {
		t.Fatal("the copy moved with its source")
	}
	if again := CopyState(c, s); again != c || c.Hash() != s.Hash() {
		t.Fatal("the copy into a buffer of the same size was not made in it")
	}
	// Apply after a copy behaves like Apply on the source (the EMA decay is copied).
	g[1] = 2
	if _, err := s.Apply(slices.Clone(g), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(slices.Clone(g), 1); err != nil {
		t.Fatal(err)
	}
	if c.Hash() != s.Hash() {
		t.Fatal("a step applied to the copy differs from the same step applied to the source")
	}
	noEMA, err := NewState([]float32{1, 2}, AdamConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c := CopyState(nil, noEMA); c.EMA != nil || c.Hash() != noEMA.Hash() {
		t.Fatal("a state without EMA copied wrong")
	}
}
