//go:build !unix

package gemm

import "time"

func processCPUTime() (time.Duration, bool) { return 0, false }
