//go:build !amd64

package gemm

var defaultKernel = genericKernel

func archKernels() []*kernel { return nil }
