package safetensors

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dirNames lists the names in dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// tempFiles lists the temp files in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, n := range dirNames(t, dir) {
		if IsTempName(n) {
			out = append(out, n)
		}
	}
	return out
}

func TestWriteFileReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ckpt-100.safetensors")
	f := sampleFile(t, 1)
	for i := range 2 { // the second write replaces the first
		if err := WriteFile(path, f); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, err := ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sameContent(t, got, f)
		f = sampleFile(t, 2)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"ckpt-100.safetensors"}) {
		t.Errorf("folder holds %v, want only the checkpoint", names)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	on, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(on, encode(t, f)) {
		t.Error("file bytes differ from Encode's")
	}
}

func TestWriteFileRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := WriteFile("x.safetensors", sampleFile(t, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile("x.safetensors"); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFileErrorsBeforeCreate(t *testing.T) {
	dir := t.TempDir()
	bad := &File{Tensors: []Tensor{{Name: "w", DType: F32, Shape: []int{2}}}}
	if err := WriteFile(filepath.Join(dir, "a.safetensors"), bad); err == nil || !strings.Contains(err.Error(), "needs 8 bytes") {
		t.Errorf("invalid file: error %v", err)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "a.safetensors"), sampleFile(t, 1)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing folder: error %v, want ErrNotExist", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("failed writes left %v", names)
	}
}

// TestWriteFileFault fails WriteFile at every stage and checks that the path
// still holds the previous file (or, once renamed, the new one), loadable,
// and that no temp file is left behind.
func TestWriteFileFault(t *testing.T) {
	errInjected := errors.New("injected fault")
	for _, stage := range Stages {
		for _, hadPrev := range []bool{true, false} {
			t.Run(fmt.Sprintf("%v/prev=%t", stage, hadPrev), func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "ckpt.safetensors")
				prev, next := sampleFile(t, 1), sampleFile(t, 2)
				if hadPrev {
					if err := WriteFile(path, prev); err != nil {
						t.Fatal(err)
					}
				}
				var seen []Stage
				w := Writer{FaultHook: func(s Stage) error {
					seen = append(seen, s)
					// While the write is in flight there is exactly one
					// temp file, and path is untouched until the rename.
					if tmp := tempFiles(t, dir); s < StageRenamed && len(tmp) != 1 {
						t.Errorf("at %v: temp files %v, want one", s, tmp)
					}
					if s < StageRenamed {
						checkHolds(t, path, prev, hadPrev)
					}
					if s == stage {
						return errInjected
					}
					return nil
				}}
				err := w.WriteFile(path, next)
				if !errors.Is(err, errInjected) {
					t.Fatalf("error %v, want the injected fault", err)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				if want := Stages[:slices.Index(Stages, stage)+1]; !slices.Equal(seen, want) {
					t.Errorf("hook saw stages %v, want %v", seen, want)
				}
				if stage == StageRenamed {
					checkHolds(t, path, next, true)
				} else {
					checkHolds(t, path, prev, hadPrev)
				}
				if tmp := tempFiles(t, dir); len(tmp) != 0 {
					t.Errorf("temp files left behind: %v", tmp)
				}
			})
		}
	}
}

// checkHolds fails unless path holds a loadable copy of want, or nothing
// when exists is false.
func checkHolds(t *testing.T, path string, want *File, exists bool) {
	t.Helper()
	got, err := ReadFile(path)
	if !exists {
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: ReadFile error %v, want ErrNotExist", path, err)
		}
		return
	}
	if err != nil {
		t.Errorf("ReadFile: %v", err)
		return
	}
	sameContent(t, got, want)
}

// TestMidWriteIsMidWrite checks that the mid-write hook fires with the temp
// file really half written.
func TestMidWriteIsMidWrite(t *testing.T) {
	dir := t.TempDir()
	f := sampleFile(t, 1)
	size := int64(len(encode(t, f)))
	fired := 0
	w := Writer{FaultHook: func(s Stage) error {
		if s != StageMidWrite {
			return nil
		}
		fired++
		tmp := tempFiles(t, dir)
		if len(tmp) != 1 {
			t.Fatalf("temp files %v", tmp)
		}
		st, err := os.Stat(filepath.Join(dir, tmp[0]))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != size/2 {
			t.Errorf("temp file is %d bytes at mid-write, want %d of %d", st.Size(), size/2, size)
		}
		return nil
	}}
	if err := w.WriteFile(filepath.Join(dir, "a.safetensors"), f); err != nil {
		t.Fatal(err)
	}
	if fired != 1 {
		t.Errorf("mid-write hook fired %d times", fired)
	}
}

func TestReadFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := encode(t, sampleFile(t, 1))
	flip := func(i int) []byte {
		b := slices.Clone(good)
		b[i] ^= 0x10
		return b
	}
	tests := []struct {
		name    string
		content []byte
		want    string
	}{
		{"data bit flip", flip(len(good) - 5), "checksum mismatch"},
		{"truncated data", good[:len(good)-3], "truncated?"},
		{"truncated header", good[:100], "truncated?"},
		{"truncated length", good[:5], "truncated?"},
		{"empty", nil, "truncated?"},
		{"zeroed tail", append(slices.Clone(good[:len(good)/2]), make([]byte, len(good)-len(good)/2)...), "checksum mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".safetensors")
			if err := os.WriteFile(path, tc.content, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadFile(path)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), path+" is corrupt") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q should name %s and mention %q", err, path, tc.want)
			}
		})
	}
	_, err := ReadFile(filepath.Join(dir, "absent.safetensors"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrCorrupt) {
		t.Errorf("missing file: error %v, want ErrNotExist and not ErrCorrupt", err)
	}
}

func TestIsTempName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{".tmp-ckpt-10.safetensors-123456.partial", true},
		{".tmp-x.partial", true},
		{"ckpt-10.safetensors", false},
		{".tmp-ckpt-10.safetensors", false},
		{"ckpt-10.safetensors.partial", false},
		{"tmp-x.partial", false},
	}
	for _, tc := range tests {
		if got := IsTempName(tc.name); got != tc.want {
			t.Errorf("IsTempName(%q) = %t, want %t", tc.name, got, tc.want)
		}
	}
}

func TestCleanTemp(t *testing.T) {
	dir := t.TempDir()
	keep := []string{"ckpt-1.safetensors", ".hidden", "notes.partial", ".tmp-dir.partial"}
	drop := []string{".tmp-ckpt-2.safetensors-1.partial", ".tmp-ckpt-3.safetensors-2.partial"}
	for _, n := range append(slices.Clone(keep[:3]), drop...) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A folder with a temp-like name is not ours to remove.
	if err := os.Mkdir(filepath.Join(dir, keep[3]), 0o755); err != nil {
		t.Fatal(err)
	}
	removed, err := CleanTemp(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range drop {
		want = append(want, filepath.Join(dir, n))
	}
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if got := dirNames(t, dir); !slices.Equal(got, slices.Sorted(slices.Values(keep))) {
		t.Errorf("left %v, want %v", got, keep)
	}
	if _, err := CleanTemp(filepath.Join(dir, "absent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing folder: error %v", err)
	}
}

// The kill test re-runs this test binary as a child that writes a file and
// blocks inside WriteFile at a chosen stage; the parent then SIGKILLs it.
const (
	killChildEnv = "NCSN_SAFETENSORS_KILL_CHILD" // "<stage>:<path>"
	stageLine    = "SAFETENSORS-AT-STAGE "
)

func TestKillDuringWrite(t *testing.T) {
	if spec := os.Getenv(killChildEnv); spec != "" {
		killChild(t, spec)
		return
	}
	for _, stage := range Stages {
		for _, hadPrev := range []bool{true, false} {
			t.Run(fmt.Sprintf("%v/prev=%t", stage, hadPrev), func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "ckpt.safetensors")
				prev, next := sampleFile(t, 1), sampleFile(t, 2)
				if hadPrev {
					if err := WriteFile(path, prev); err != nil {
						t.Fatal(err)
					}
				}

				cmd := exec.Command(os.Args[0], "-test.run=^TestKillDuringWrite$", "-test.count=1")
				cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%s", killChildEnv, stage, path))
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				stdin, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				defer stdin.Close()
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				// Wait for the child to report that it is blocked at the stage.
				reached := false
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if sc.Text() == stageLine+stage.String() {
						reached = true
						break
					}
				}
				if !reached {
					cmd.Wait()
					t.Fatalf("child never reached %v; stderr:\n%s", stage, stderr.String())
				}
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				if err := cmd.Wait(); err == nil {
					t.Fatal("child exited cleanly after SIGKILL")
				}

				if stage == StageRenamed {
					checkHolds(t, path, next, true)
				} else {
					checkHolds(t, path, prev, hadPrev)
				}
				tmp := tempFiles(t, dir)
				if stage == StageRenamed {
					if len(tmp) != 0 {
						t.Errorf("temp files after the rename: %v", tmp)
					}
					return
				}
				if len(tmp) != 1 {
					t.Fatalf("temp files %v, want the killed write's one", tmp)
				}
				// A leftover written at least halfway is a partial file,
				// which a reader refuses; a complete one is still never read,
				// as its name marks it temporary.
				if stage <= StageMidWrite {
					if _, err := ReadFile(filepath.Join(dir, tmp[0])); !errors.Is(err, ErrCorrupt) {
						t.Errorf("partial temp file: ReadFile error %v, want ErrCorrupt", err)
					}
				}
				removed, err := CleanTemp(dir)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(removed, []string{filepath.Join(dir, tmp[0])}) {
					t.Errorf("CleanTemp removed %v, want %v", removed, tmp)
				}
				want := []string{"ckpt.safetensors"}
				if !hadPrev {
					want = nil
				}
				if got := dirNames(t, dir); !slices.Equal(got, want) {
					t.Errorf("after CleanTemp the folder holds %v, want %v", got, want)
				}
			})
		}
	}
}

// killChild writes sampleFile(2) to the path in spec, announcing the stage
// on stdout and then blocking there until the parent kills it.
func killChild(t *testing.T, spec string) {
	stageStr, path, ok := strings.Cut(spec, ":")
	n, err := strconv.Atoi(stageStr)
	if !ok || err != nil {
		fmt.Fprintf(os.Stderr, "bad %s=%q\n", killChildEnv, spec)
		os.Exit(2)
	}
	stage := Stage(n)
	w := Writer{FaultHook: func(s Stage) error {
		if s != stage {
			return nil
		}
		fmt.Printf("%s%v\n", stageLine, s)
		// Blocking on stdin rather than select{} keeps the runtime from
		// calling this a deadlock, and ends the child if the parent dies.
		var b [1]byte
		os.Stdin.Read(b[:])
		os.Exit(3)
		return nil
	}}
	err = w.WriteFile(path, sampleFile(t, 2))
	fmt.Fprintf(os.Stderr, "child finished without blocking: %v\n", err)
	os.Exit(4)
}
