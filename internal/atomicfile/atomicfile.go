// Package atomicfile writes a file whole or not at all: a temporary file in the same
// folder, renamed over the path once written. Unlike os.CreateTemp's private 0600 files,
// the result takes the mode asked for less the umask, as os.WriteFile's would.
// Checkpoints, which also need fsync and fault injection, have their own writer in
// internal/safetensors.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// TempPrefix starts the names of temporary files; the dot keeps them out of globs.
const TempPrefix = ".tmp-"

// Write creates path with mode perm (less the umask) from what write writes.
func Write(path string, perm fs.FileMode, write func(io.Writer) error) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var f *os.File
	for range 100 {
		var r [6]byte
		rand.Read(r[:])
		name := filepath.Join(dir, TempPrefix+base+"-"+hex.EncodeToString(r[:]))
		var err error
		f, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if f == nil {
		return fmt.Errorf("write %s: no free temporary name", path)
	}
	tmp := f.Name()
	err := write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteFile is Write of a byte slice.
func WriteFile(path string, b []byte, perm fs.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}
