package gemm

import "os"

// Implemented in kernel_amd64.s.

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

//go:noescape
func kern8x32(kc int, a, b, c *float32, ldc int, alpha, beta float32, load bool)

//go:noescape
func kern8x32r(kc int, a *float32, lda int, b, c *float32, ldc int, alpha, beta float32, load bool)

//go:noescape
func kern6x16(kc int, a, b, c *float32, ldc int, alpha, beta float32, load bool)

//go:noescape
func kern6x16r(kc int, a *float32, lda int, b, c *float32, ldc int, alpha, beta float32, load bool)

//go:noescape
func copyPanels(kb int, src *float32, lds int, dst *float32, w, panels int)

//go:noescape
func transPanel8(kb8 int, src *float32, lds int, dst *float32, w int)

// avx2Kernel needs AVX2 and FMA. 6×16 keeps twelve ymm accumulators, two B
// vectors and the broadcast A elements in the sixteen ymm registers, and its
// 16 columns divide the networks' channel counts (32, 64, 96, 128, 192):
// the products' columns are output channels, where 24-wide tiles wasted a
// third of the work at 32. It loads 8 values per 12 FMAs, so it also keeps
// 128-bit FMA units (Zen 1) busy.
var avx2Kernel = blocked(&kernel{
	name: "avx2",
	mr:   6, nr: 16,
	micro: func(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
		_, _, _ = a[6*kc-1], b[16*kc-1], c[5*ldc+15] // the kernel reads and writes this far
		kern6x16(kc, &a[0], &b[0], &c[0], ldc, alpha, beta, beta != 0)
	},
	microRows: func(kc int, a []float32, lda int, b, c []float32, ldc int, alpha, beta float32) {
		_, _, _ = a[5*lda+kc-1], b[16*kc-1], c[5*ldc+15]
		kern6x16r(kc, &a[0], lda, &b[0], &c[0], ldc, alpha, beta, beta != 0)
	},
	copyRows:  copyPanels,
	transRows: transPanel8,
}, caches)

// avx512Kernel needs AVX-512F (and AVX2 for packing). Zen 5 issues two zmm
// FMAs per cycle, twice the ymm rate (measured ≈1.6× here); on Zen 4, which
// splits zmm ops in two, it is no slower than avx2. 8×32 keeps sixteen zmm
// accumulators, and 8 rows still divide the channel counts.
var avx512Kernel = blocked(&kernel{
	name: "avx512",
	mr:   8, nr: 32,
	micro: func(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
		_, _, _ = a[8*kc-1], b[32*kc-1], c[7*ldc+31] // the kernel reads and writes this far
		kern8x32(kc, &a[0], &b[0], &c[0], ldc, alpha, beta, beta != 0)
	},
	microRows: func(kc int, a []float32, lda int, b, c []float32, ldc int, alpha, beta float32) {
		_, _, _ = a[7*lda+kc-1], b[32*kc-1], c[7*ldc+31]
		kern8x32r(kc, &a[0], lda, &b[0], &c[0], ldc, alpha, beta, beta != 0)
	},
	copyRows:  copyPanels,
	transRows: transPanel8,
}, caches)

var defaultKernel = pickKernel()

// hasAVX2FMA reports whether the CPU and OS support AVX2 and FMA.
func hasAVX2FMA() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if ecx1&(fma|osxsave|avx) != fma|osxsave|avx {
		return false
	}
	if xcr0, _ := xgetbv(); xcr0&0x6 != 0x6 { // OS saves XMM and YMM state
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<5) != 0
}

// hasAVX512 reports whether the CPU and OS support AVX-512F besides AVX2 and FMA.
func hasAVX512() bool {
	if !hasAVX2FMA() {
		return false
	}
	if xcr0, _ := xgetbv(); xcr0&0xe6 != 0xe6 { // and opmask, ZMM0–15 upper halves, ZMM16–31
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<16) != 0
}

// pickKernel returns the fastest kernel, or the one NCSN_GEMM names
// (avx512, avx2, generic) if this CPU can run it: to measure the AVX2 path
// on an AVX-512 machine.
func pickKernel() *kernel {
	ks := append(archKernels(), genericKernel)
	if name := os.Getenv("NCSN_GEMM"); name != "" {
		for _, k := range ks {
			if k.name == name {
				return k
			}
		}
	}
	return ks[0]
}

// archKernels lists the assembly kernels this CPU can run, fastest first.
func archKernels() []*kernel {
	var ks []*kernel
	if hasAVX512() {
		ks = append(ks, avx512Kernel)
	}
	if hasAVX2FMA() {
		ks = append(ks, avx2Kernel)
	}
	return ks
}
