package model

import "github.com/ncsn/ncsn/internal/gemm"

// The transforms run in the vector width of the GEMM kernel in use, so that
// forcing internal/gemm to AVX2 (NCSN_GEMM=avx2) measures a whole AVX2 path.
func init() {
	k := gemm.Kernel()
	for _, a := range winoAsm {
		if a.isa == k {
			a.x.asm, a.x.lanes, a.x.variants = a.fn, a.lanes, a.variants
		}
	}
	// AVX-512 machines run AVX2 too: its 8-lane routines take a remainder of
	// 8 channels (layers of 8, 24, 40 … channels) off the portable loop.
	if k == "avx512" {
		for _, a := range winoAsm {
			if a.isa == "avx2" && a.variants == a.x.variants {
				a.x.asm8 = a.fn
			}
		}
	}
	for _, a := range winoAdd {
		if a.isa == k {
			vecAdd, vecAddLanes = a.fn, a.lanes
		}
	}
}
