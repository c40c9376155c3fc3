package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWrite(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "a.png")
	if err := WriteFile(path, []byte("one"), 0o666); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644 (0666 less the umask 022)", st.Mode().Perm())
	}
	// A failed write leaves the old file and no temporary one.
	boom := errors.New("boom")
	if err := Write(path, 0o666, func(w io.Writer) error { w.Write([]byte("tw")); return boom }); !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "one" {
		t.Errorf("after a failed write the file holds %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d entries left in the folder, want 1", len(ents))
	}
	if err := WriteFile(filepath.Join(dir, "no", "such"), nil, 0o666); err == nil {
		t.Error("write into a missing folder succeeded")
	}
}
