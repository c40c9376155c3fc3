//go:build unix

package gemm

import (
	"syscall"
	"time"
)

// processCPUTime is the CPU time this process has used, so that benchmarks
// can report throughput per CPU-second, which other load on a shared machine
// disturbs far less than wall time.
func processCPUTime() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
