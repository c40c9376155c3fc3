//go:build unix

// Package cputime reads the CPU time the process has used, which benchmarks
// report beside wall time: other load on a shared machine disturbs it far less.
package cputime

import (
	"syscall"
	"time"
)

// Process is the CPU time this process has used (user + system, all
// threads); false where it cannot be read.
func Process() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
