package safetensors

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Temporary files are named TempPrefix + final name + "-" + random +
// TempSuffix in the destination folder. The leading dot keeps them out of
// globs such as "ckpt-*.safetensors"; CleanTemp removes leftovers.
const (
	TempPrefix = ".tmp-"
	TempSuffix = ".partial"
)

// Stage is a point in WriteFile at which a Writer's FaultHook runs.
type Stage int

// The stages, in the order WriteFile reaches them.
const (
	StageCreated  Stage = iota + 1 // temp file created, nothing written
	StageMidWrite                  // about half of the bytes written
	StageWritten                   // all bytes written, not yet fsynced
	StageSynced                    // temp file fsynced, not yet closed
	StageClosed                    // temp file closed, not yet renamed
	StageRenamed                   // renamed over the path, folder not yet fsynced
)

// Stages lists every Stage, for tests that inject a fault at each.
var Stages = []Stage{StageCreated, StageMidWrite, StageWritten, StageSynced, StageClosed, StageRenamed}

func (s Stage) String() string {
	switch s {
	case StageCreated:
		return "created"
	case StageMidWrite:
		return "mid-write"
	case StageWritten:
		return "written"
	case StageSynced:
		return "synced"
	case StageClosed:
		return "closed"
	case StageRenamed:
		return "renamed"
	}
	return fmt.Sprintf("Stage(%d)", int(s))
}

// Writer writes files atomically. The zero value is ready to use.
type Writer struct {
	// FaultHook is for crash-safety tests only: when non-nil it runs at
	// each Stage, and a non-nil error aborts WriteFile there as an I/O
	// error at that point would. A hook may also block, so that a test can
	// kill the process mid-write.
	FaultHook func(Stage) error
}

// WriteFile writes f to path atomically with a zero Writer.
func WriteFile(path string, f *File) error { return Writer{}.WriteFile(path, f) }

// WriteFile writes f to path atomically: it writes a temporary file in the
// same folder, fsyncs it, renames it over path and fsyncs the folder. A
// reader sees either the previous file or the new one, never a mix, even if
// the process or the machine dies. On error the temporary file is removed;
// if the error comes after the rename (the folder fsync), the new file is
// already at path.
func (w Writer) WriteFile(path string, f *File) (err error) {
	p, err := prepare(f)
	if err != nil {
		return err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, TempPrefix+base+"-*"+TempSuffix)
	if err != nil {
		return fmt.Errorf("safetensors: create temp file for %s: %w", path, err)
	}
	tmpName := tmp.Name()
	closed, renamed := false, false
	defer func() {
		if err == nil || renamed {
			return
		}
		if !closed {
			tmp.Close()
		}
		// The write already failed; a failure to remove is secondary and
		// CleanTemp will catch the file later.
		os.Remove(tmpName)
	}()
	fail := func(what string, err error) error {
		return fmt.Errorf("safetensors: write %s: %s: %w", path, what, err)
	}

	if err := w.hook(StageCreated); err != nil {
		return fail("after create", err)
	}
	// CreateTemp makes the file private; checkpoints are meant to be read by
	// other users and tools, like any file os.WriteFile would create.
	if err := tmp.Chmod(0o644); err != nil {
		return fail("chmod", err)
	}
	hw := &hookWriter{w: tmp, at: p.size / 2, hook: w.hook}
	if err := p.writeTo(hw); err != nil {
		return fail("write", err)
	}
	if err := w.hook(StageWritten); err != nil {
		return fail("before fsync", err)
	}
	if err := tmp.Sync(); err != nil {
		return fail("fsync", err)
	}
	if err := w.hook(StageSynced); err != nil {
		return fail("before close", err)
	}
	closed = true
	if err := tmp.Close(); err != nil {
		return fail("close", err)
	}
	if err := w.hook(StageClosed); err != nil {
		return fail("before rename", err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fail("rename", err)
	}
	renamed = true
	if err := w.hook(StageRenamed); err != nil {
		return fail("before folder fsync", err)
	}
	if err := syncDir(dir); err != nil {
		return fail("fsync folder", err)
	}
	return nil
}

func (w Writer) hook(s Stage) error {
	if w.FaultHook == nil {
		return nil
	}
	return w.FaultHook(s)
}

// hookWriter runs the StageMidWrite hook once, after exactly at bytes have
// reached the underlying writer, so the temp file really is half written.
type hookWriter struct {
	w     io.Writer
	n, at int64
	fired bool
	hook  func(Stage) error
}

func (h *hookWriter) Write(p []byte) (int, error) {
	written := 0
	if !h.fired && h.n+int64(len(p)) >= h.at {
		k := int(h.at - h.n)
		m, err := h.w.Write(p[:k])
		h.n += int64(m)
		written += m
		if err != nil {
			return written, err
		}
		h.fired = true
		if err := h.hook(StageMidWrite); err != nil {
			return written, err
		}
		p = p[k:]
	}
	m, err := h.w.Write(p)
	h.n += int64(m)
	return written + m, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadFile reads and verifies the file at path. Content that does not
// verify gives an error naming the file and wrapping ErrCorrupt; I/O errors
// are returned as they are.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := Decode(b)
	if err != nil {
		if ce, ok := err.(*corruptError); ok {
			ce.path = path // Decode made ce for this call alone
		}
		return nil, err
	}
	return f, nil
}

// IsTempName reports whether a file name (not a path) is one of WriteFile's
// temporary files, which readers must ignore.
func IsTempName(name string) bool {
	return strings.HasPrefix(name, TempPrefix) && strings.HasSuffix(name, TempSuffix)
}

// CleanTemp removes the temporary files that writes interrupted by a crash
// left in dir, returning their paths. It must not run concurrently with a
// WriteFile into the same folder, whose temp file it would remove.
func CleanTemp(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("safetensors: clean temp files: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !e.Type().IsRegular() || !IsTempName(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("safetensors: clean temp files: %w", err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}
