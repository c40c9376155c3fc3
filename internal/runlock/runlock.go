//go:build unix

// Package runlock keeps two runs out of one run folder: an exclusive flock on DIR/.lock
// that holds the holder's pid. The kernel drops the lock when its process dies, however it
// dies, so a crash leaves nothing to clean up.
package runlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Name is the lock file in a run folder.
const Name = ".lock"

// BusyError says which process holds a folder.
type BusyError struct {
	Dir string
	PID int // 0 when the holder did not say
}

func (e *BusyError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("%s is in use by %s, a run writing there: wait for it to end, stop it, or pick another --out", e.Dir, who)
}

// Lock is a held folder.
type Lock struct {
	once sync.Once
	f    *os.File
}

// Acquire locks dir (creating it), or returns a *BusyError naming the holder.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("runlock: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, Name), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("runlock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &BusyError{Dir: dir, PID: Holder(dir)}
		}
		return nil, fmt.Errorf("runlock: lock %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Holder is the pid written in dir's lock file, 0 if none.
func Holder(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, Name))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Release unlocks the folder; it is idempotent, and nil for a nil Lock.
func (l *Lock) Release() error {
	if l == nil {
		return nil
	}
	var err error
	l.once.Do(func() { err = l.f.Close() })
	return err
}
