#include "textflag.h"

// func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eaxArg+0(FP), AX
	MOVL ecxArg+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func xgetbv() (eax, edx uint32)
TEXT ·xgetbv(SB), NOSPLIT, $0-8
	MOVL $0, CX
	XGETBV
	MOVL AX, eax+0(FP)
	MOVL DX, edx+4(FP)
	RET

// One step of the 4×24 AVX2 kernel: three ymm of B times four broadcast
// elements of A into twelve accumulators Y0–Y11.
#define STEP4x24(aoff, boff) \
	VMOVUPS boff(DI), Y12; \
	VMOVUPS boff+32(DI), Y13; \
	VMOVUPS boff+64(DI), Y14; \
	VBROADCASTSS aoff(SI), Y15; \
	VFMADD231PS Y12, Y15, Y0; \
	VFMADD231PS Y13, Y15, Y1; \
	VFMADD231PS Y14, Y15, Y2; \
	VBROADCASTSS aoff+4(SI), Y15; \
	VFMADD231PS Y12, Y15, Y3; \
	VFMADD231PS Y13, Y15, Y4; \
	VFMADD231PS Y14, Y15, Y5; \
	VBROADCASTSS aoff+8(SI), Y15; \
	VFMADD231PS Y12, Y15, Y6; \
	VFMADD231PS Y13, Y15, Y7; \
	VFMADD231PS Y14, Y15, Y8; \
	VBROADCASTSS aoff+12(SI), Y15; \
	VFMADD231PS Y12, Y15, Y9; \
	VFMADD231PS Y13, Y15, Y10; \
	VFMADD231PS Y14, Y15, Y11

// func kern4x24(kc int, a, b, c *float32, ldc int, alpha, beta float32, load bool)
// c[0:4][0:24] = alpha·a·b (+ beta·c when load), a packed 4 per step, b 24 per step.
TEXT ·kern4x24(SB), NOSPLIT, $0-49
	MOVQ kc+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8
	LEAQ (DX)(R8*2), R9 // row 2

	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

	PREFETCHT0 (DX)
	PREFETCHT0 64(DX)
	PREFETCHT0 (DX)(R8*1)
	PREFETCHT0 64(DX)(R8*1)
	PREFETCHT0 (R9)
	PREFETCHT0 64(R9)
	PREFETCHT0 (R9)(R8*1)
	PREFETCHT0 64(R9)(R8*1)

	CMPQ CX, $4
	JLT  tail

loop4:
	STEP4x24(0, 0)
	STEP4x24(16, 96)
	STEP4x24(32, 192)
	STEP4x24(48, 288)
	ADDQ $64, SI
	ADDQ $384, DI
	SUBQ $4, CX
	CMPQ CX, $4
	JGE  loop4

tail:
	TESTQ CX, CX
	JEQ   store

loop1:
	STEP4x24(0, 0)
	ADDQ $16, SI
	ADDQ $96, DI
	DECQ CX
	JNE  loop1

store:
	VBROADCASTSS alpha+40(FP), Y15
	VMULPS Y15, Y0, Y0
	VMULPS Y15, Y1, Y1
	VMULPS Y15, Y2, Y2
	VMULPS Y15, Y3, Y3
	VMULPS Y15, Y4, Y4
	VMULPS Y15, Y5, Y5
	VMULPS Y15, Y6, Y6
	VMULPS Y15, Y7, Y7
	VMULPS Y15, Y8, Y8
	VMULPS Y15, Y9, Y9
	VMULPS Y15, Y10, Y10
	VMULPS Y15, Y11, Y11
	MOVBLZX load+48(FP), AX
	TESTL   AX, AX
	JEQ     store0
	VBROADCASTSS beta+44(FP), Y15
	VFMADD231PS (DX), Y15, Y0
	VFMADD231PS 32(DX), Y15, Y1
	VFMADD231PS 64(DX), Y15, Y2
	VFMADD231PS (DX)(R8*1), Y15, Y3
	VFMADD231PS 32(DX)(R8*1), Y15, Y4
	VFMADD231PS 64(DX)(R8*1), Y15, Y5
	VFMADD231PS (R9), Y15, Y6
	VFMADD231PS 32(R9), Y15, Y7
	VFMADD231PS 64(R9), Y15, Y8
	VFMADD231PS (R9)(R8*1), Y15, Y9
	VFMADD231PS 32(R9)(R8*1), Y15, Y10
	VFMADD231PS 64(R9)(R8*1), Y15, Y11

store0:
	VMOVUPS Y0, (DX)
	VMOVUPS Y1, 32(DX)
	VMOVUPS Y2, 64(DX)
	VMOVUPS Y3, (DX)(R8*1)
	VMOVUPS Y4, 32(DX)(R8*1)
	VMOVUPS Y5, 64(DX)(R8*1)
	VMOVUPS Y6, (R9)
	VMOVUPS Y7, 32(R9)
	VMOVUPS Y8, 64(R9)
	VMOVUPS Y9, (R9)(R8*1)
	VMOVUPS Y10, 32(R9)(R8*1)
	VMOVUPS Y11, 64(R9)(R8*1)
	VZEROUPPER
	RET

// func copyPanels(kb int, src *float32, lds int, dst *float32, w, panels int)
// dst[q·w·kb + p·w + j] = src[p·lds + q·w + j] for p < kb, q < panels, j < w;
// w is a multiple of 8, or 4. Source rows are read in order, which the
// hardware prefetchers follow far better than w-wide strided reads.
TEXT ·copyPanels(SB), NOSPLIT, $0-48
	MOVQ kb+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ lds+16(FP), R8
	SHLQ $2, R8
	MOVQ dst+24(FP), DI
	MOVQ w+32(FP), R9
	MOVQ R9, R10
	IMULQ CX, R10
	SHLQ $2, R10 // panel stride in bytes
	SHLQ $2, R9  // row width in bytes
	MOVQ panels+40(FP), R11
	TESTQ CX, CX
	JEQ   cpdone
	TESTQ R11, R11
	JEQ   cpdone
	LEAQ (R8)(R8*2), R13 // prefetch distance: 3 rows ahead
	CMPQ R9, $16
	JEQ  cp4row

cprow:
	MOVQ SI, AX
	MOVQ DI, BX
	MOVQ R11, R12

cppanel:
	XORQ DX, DX

cpchunk:
	ADDQ       R13, AX
	PREFETCHT0 (AX)(DX*1)
	SUBQ       R13, AX
	VMOVUPS (AX)(DX*1), Y0
	VMOVUPS Y0, (BX)(DX*1)
	ADDQ    $32, DX
	CMPQ    DX, R9
	JLT     cpchunk
	ADDQ    R9, AX
	ADDQ    R10, BX
	DECQ    R12
	JNE     cppanel
	ADDQ    R8, SI
	ADDQ    R9, DI
	DECQ    CX
	JNE     cprow
	JMP     cpdone

cp4row:
	MOVQ SI, AX
	MOVQ DI, BX
	MOVQ R11, R12

cp4panel:
	VMOVUPS (AX), X0
	VMOVUPS X0, (BX)
	ADDQ    $16, AX
	ADDQ    R10, BX
	DECQ    R12
	JNE     cp4panel
	ADDQ    R8, SI
	ADDQ    $16, DI
	DECQ    CX
	JNE     cp4row

cpdone:
	VZEROUPPER
	RET

// func transPanel8(kb8 int, src *float32, lds int, dst *float32, w int)
// dst[p·w + j] = src[j·lds + p] for p < 8·kb8, j < w; w is a multiple of 8.
// Each 8×8 block is transposed in registers.
TEXT ·transPanel8(SB), NOSPLIT, $0-40
	MOVQ lds+16(FP), R8
	SHLQ $2, R8
	MOVQ w+32(FP), R11
	SHLQ $2, R11 // dst row stride in bytes
	LEAQ (R8)(R8*2), R12 // 3·lds
	XORQ R13, R13 // column group j·4 bytes offset into dst

tgroup:
	MOVQ kb8+0(FP), CX
	TESTQ CX, CX
	JEQ   tdone
	MOVQ src+8(FP), SI
	MOVQ R13, AX
	SHRQ $2, AX
	IMULQ R8, AX // j·lds bytes
	ADDQ AX, SI
	MOVQ dst+24(FP), DI
	ADDQ R13, DI

tblock:
	LEAQ (SI)(R8*4), R9
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R8*1), Y1
	VMOVUPS (SI)(R8*2), Y2
	VMOVUPS (SI)(R12*1), Y3
	VMOVUPS (R9), Y4
	VMOVUPS (R9)(R8*1), Y5
	VMOVUPS (R9)(R8*2), Y6
	VMOVUPS (R9)(R12*1), Y7

	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7

	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15

	VMOVUPS Y8, (DI)
	ADDQ    R11, DI
	VMOVUPS Y9, (DI)
	ADDQ    R11, DI
	VMOVUPS Y10, (DI)
	ADDQ    R11, DI
	VMOVUPS Y11, (DI)
	ADDQ    R11, DI
	VMOVUPS Y12, (DI)
	ADDQ    R11, DI
	VMOVUPS Y13, (DI)
	ADDQ    R11, DI
	VMOVUPS Y14, (DI)
	ADDQ    R11, DI
	VMOVUPS Y15, (DI)
	ADDQ    R11, DI

	ADDQ $32, SI
	DECQ CX
	JNE  tblock

	ADDQ $32, R13
	CMPQ R13, R11
	JLT  tgroup

tdone:
	VZEROUPPER
	RET

// func transPanel4(kb8 int, src *float32, lds int, dst *float32)
// dst[p·4 + i] = src[i·lds + p] for p < 8·kb8, i < 4.
TEXT ·transPanel4(SB), NOSPLIT, $0-32
	MOVQ kb8+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ lds+16(FP), R8
	SHLQ $2, R8
	MOVQ dst+24(FP), DI
	LEAQ (R8)(R8*2), R12
	TESTQ CX, CX
	JEQ   t4done

t4block:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R8*1), Y1
	VMOVUPS (SI)(R8*2), Y2
	VMOVUPS (SI)(R12*1), Y3
	VUNPCKLPS Y1, Y0, Y4
	VUNPCKHPS Y1, Y0, Y5
	VUNPCKLPS Y3, Y2, Y6
	VUNPCKHPS Y3, Y2, Y7
	VSHUFPS $0x44, Y6, Y4, Y0
	VSHUFPS $0xEE, Y6, Y4, Y1
	VSHUFPS $0x44, Y7, Y5, Y2
	VSHUFPS $0xEE, Y7, Y5, Y3
	VPERM2F128 $0x20, Y1, Y0, Y4
	VPERM2F128 $0x20, Y3, Y2, Y5
	VPERM2F128 $0x31, Y1, Y0, Y6
	VPERM2F128 $0x31, Y3, Y2, Y7
	VMOVUPS Y4, (DI)
	VMOVUPS Y5, 32(DI)
	VMOVUPS Y6, 64(DI)
	VMOVUPS Y7, 96(DI)
	ADDQ $32, SI
	ADDQ $128, DI
	DECQ CX
	JNE  t4block

t4done:
	VZEROUPPER
	RET
