//go:build !amd64

package gemm

func detectCaches() CacheSizes { return fallbackCaches }
