#include "textflag.h"

// AVX-512 loops of GroupNorm+SiLU over p rows (pixels) of c channels. Each
// row is done in 16-lane steps with K1 (all lanes), then one step with K2
// (the c mod 16 last lanes), so any c works; per-channel vectors are reloaded
// for every row from L1.

// ROWMASKS sets K1 to all lanes and K2 to the c mod 16 lanes of a row's tail
// (c in R13). Clobbers AX, CX.
#define ROWMASKS \
	MOVQ R13, CX; \
	ANDQ $15, CX; \
	MOVL $1, AX; \
	SHLL CX, AX; \
	DECL AX; \
	KMOVW AX, K2; \
	KXNORW K1, K1, K1

#define BCAST(bits, z) \
	MOVL $bits, AX; \
	VPBROADCASTD AX, z

// SILU(k): with x at SI, a at R9, d at R10, y at R11, sig at R12, lane j at
// BX: u = a·x + d, σ = 1/(1 + e^−u) into sig, u·σ into y. e^t as expBatch:
// clamp to [−87, 88], t = k·ln2 + r, degree-6 Taylor polynomial, ·2^k.
#define SILU(k) \
	VMOVUPS.Z (SI)(BX*4), k, Z0; \
	VMOVUPS.Z (R9)(BX*4), k, Z1; \
	VMOVUPS.Z (R10)(BX*4), k, Z2; \
	VFMADD231PS Z0, Z1, Z2; \
	VSUBPS Z2, Z28, Z3; \
	VMINPS Z16, Z3, Z3; \
	VMAXPS Z17, Z3, Z3; \
	VMOVAPS Z19, Z4; \
	VFMADD231PS Z18, Z3, Z4; \
	VSUBPS Z19, Z4, Z4; \
	VFNMADD231PS Z20, Z4, Z3; \
	VFMADD231PS Z21, Z4, Z3; \
	VMOVAPS Z22, Z6; \
	VFMADD213PS Z23, Z3, Z6; \
	VFMADD213PS Z24, Z3, Z6; \
	VFMADD213PS Z25, Z3, Z6; \
	VFMADD213PS Z26, Z3, Z6; \
	VFMADD213PS Z27, Z3, Z6; \
	VFMADD213PS Z27, Z3, Z6; \
	VSCALEFPS Z4, Z6, Z6; \
	VADDPS Z27, Z6, Z6; \
	VDIVPS Z6, Z27, Z8; \
	VMULPS Z8, Z2, Z9; \
	VMOVUPS Z8, k, (R12)(BX*4); \
	VMOVUPS Z9, k, (R11)(BX*4)

// func gnSiluAVX512(x, a, d, y, sig *float32, c, p int)
TEXT ·gnSiluAVX512(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), SI
	MOVQ a+8(FP), R9
	MOVQ d+16(FP), R10
	MOVQ y+24(FP), R11
	MOVQ sig+32(FP), R12
	MOVQ c+40(FP), R13
	MOVQ p+48(FP), R8
	ROWMASKS
	BCAST(0x42b00000, Z16) // 88
	BCAST(0xc2ae0000, Z17) // −87
	BCAST(0x3fb8aa3b, Z18) // log2 e
	BCAST(0x4b400000, Z19) // 1.5·2²³
	BCAST(0x3f318000, Z20) // ln 2 high part
	BCAST(0x395e8083, Z21) // −(ln 2 low part)
	BCAST(0x3ab60b61, Z22) // 1/720
	BCAST(0x3c088889, Z23) // 1/120
	BCAST(0x3d2aaaab, Z24) // 1/24
	BCAST(0x3e2aaaab, Z25) // 1/6
	BCAST(0x3f000000, Z26) // 1/2
	BCAST(0x3f800000, Z27) // 1
	VPXORD Z28, Z28, Z28
	MOVQ R13, DX
	ANDQ $-16, DX
	TESTQ R8, R8
	JEQ  siludone

silurow:
	XORQ BX, BX
	CMPQ BX, DX
	JGE  silutail

silufull:
	SILU(K1)
	ADDQ $16, BX
	CMPQ BX, DX
	JLT  silufull

silutail:
	CMPQ BX, R13
	JGE  silunext
	SILU(K2)

silunext:
	LEAQ (SI)(R13*4), SI
	LEAQ (R11)(R13*4), R11
	LEAQ (R12)(R13*4), R12
	DECQ R8
	JNE  silurow

siludone:
	VZEROUPPER
	RET

// DU(k): with x at SI, dy at DI, sig at R12, a at R9, d at R10, du at R11,
// s1 at AX, s2 at CX: u = a·x + d, du = dy·σ·(1 + u·(1−σ)), s1 += du,
// s2 += du·x.
#define DU(k) \
	VMOVUPS.Z (SI)(BX*4), k, Z0; \
	VMOVUPS.Z (R9)(BX*4), k, Z1; \
	VMOVUPS.Z (R10)(BX*4), k, Z2; \
	VFMADD231PS Z0, Z1, Z2; \
	VMOVUPS.Z (R12)(BX*4), k, Z3; \
	VSUBPS Z3, Z27, Z4; \
	VFMADD213PS Z27, Z2, Z4; \
	VMOVUPS.Z (DI)(BX*4), k, Z5; \
	VMULPS Z3, Z5, Z5; \
	VMULPS Z4, Z5, Z5; \
	VMOVUPS Z5, k, (R11)(BX*4); \
	VMOVUPS.Z (AX)(BX*4), k, Z6; \
	VADDPS Z5, Z6, Z6; \
	VMOVUPS Z6, k, (AX)(BX*4); \
	VMOVUPS.Z (CX)(BX*4), k, Z7; \
	VFMADD231PS Z0, Z5, Z7; \
	VMOVUPS Z7, k, (CX)(BX*4)

// func gnDuAVX512(x, dy, sig, a, d, du, s1, s2 *float32, c, p int)
TEXT ·gnDuAVX512(SB), NOSPLIT, $0-80
	MOVQ x+0(FP), SI
	MOVQ dy+8(FP), DI
	MOVQ sig+16(FP), R12
	MOVQ a+24(FP), R9
	MOVQ d+32(FP), R10
	MOVQ du+40(FP), R11
	MOVQ c+64(FP), R13
	MOVQ p+72(FP), R8
	ROWMASKS
	BCAST(0x3f800000, Z27) // 1
	MOVQ s1+48(FP), AX
	MOVQ s2+56(FP), CX
	MOVQ R13, DX
	ANDQ $-16, DX
	TESTQ R8, R8
	JEQ  dudone

durow:
	XORQ BX, BX
	CMPQ BX, DX
	JGE  dutail

dufull:
	DU(K1)
	ADDQ $16, BX
	CMPQ BX, DX
	JLT  dufull

dutail:
	CMPQ BX, R13
	JGE  dunext
	DU(K2)

dunext:
	LEAQ (SI)(R13*4), SI
	LEAQ (DI)(R13*4), DI
	LEAQ (R12)(R13*4), R12
	LEAQ (R11)(R13*4), R11
	DECQ R8
	JNE  durow

dudone:
	VZEROUPPER
	RET

// DXROW(k): with x at SI, a at R9, b at R10, t at R12, dx at R11 (holding du):
// dx = a·du + b·x + t.
#define DXROW(k) \
	VMOVUPS.Z (SI)(BX*4), k, Z0; \
	VMOVUPS.Z (R12)(BX*4), k, Z1; \
	VMOVUPS.Z (R10)(BX*4), k, Z2; \
	VFMADD231PS Z0, Z2, Z1; \
	VMOVUPS.Z (R9)(BX*4), k, Z3; \
	VMOVUPS.Z (R11)(BX*4), k, Z4; \
	VFMADD231PS Z4, Z3, Z1; \
	VMOVUPS Z1, k, (R11)(BX*4)

// func gnDxAVX512(x, a, b, t, dx *float32, c, p int)
TEXT ·gnDxAVX512(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), SI
	MOVQ a+8(FP), R9
	MOVQ b+16(FP), R10
	MOVQ t+24(FP), R12
	MOVQ dx+32(FP), R11
	MOVQ c+40(FP), R13
	MOVQ p+48(FP), R8
	ROWMASKS
	MOVQ R13, DX
	ANDQ $-16, DX
	TESTQ R8, R8
	JEQ  dxdone

dxrow:
	XORQ BX, BX
	CMPQ BX, DX
	JGE  dxtail

dxfull:
	DXROW(K1)
	ADDQ $16, BX
	CMPQ BX, DX
	JLT  dxfull

dxtail:
	CMPQ BX, R13
	JGE  dxnext
	DXROW(K2)

dxnext:
	LEAQ (SI)(R13*4), SI
	LEAQ (R11)(R13*4), R11
	DECQ R8
	JNE  dxrow

dxdone:
	VZEROUPPER
	RET

// SUM(k): with x at SI, s at R10: s += x.
#define SUM(k) \
	VMOVUPS.Z (SI)(BX*4), k, Z0; \
	VMOVUPS.Z (R10)(BX*4), k, Z1; \
	VADDPS Z0, Z1, Z1; \
	VMOVUPS Z1, k, (R10)(BX*4)

// func colSumAVX512(x, s *float32, c, p int)
TEXT ·colSumAVX512(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ s+8(FP), R10
	MOVQ c+16(FP), R13
	MOVQ p+24(FP), R8
	ROWMASKS
	MOVQ R13, DX
	ANDQ $-16, DX
	TESTQ R8, R8
	JEQ  sumdone

sumrow:
	XORQ BX, BX
	CMPQ BX, DX
	JGE  sumtail

sumfull:
	SUM(K1)
	ADDQ $16, BX
	CMPQ BX, DX
	JLT  sumfull

sumtail:
	CMPQ BX, R13
	JGE  sumnext
	SUM(K2)

sumnext:
	LEAQ (SI)(R13*4), SI
	DECQ R8
	JNE  sumrow

sumdone:
	VZEROUPPER
	RET

// SQDEV(k): with x at SI, mean at R9, s at R10: s += (x − mean)².
#define SQDEV(k) \
	VMOVUPS.Z (SI)(BX*4), k, Z0; \
	VMOVUPS.Z (R9)(BX*4), k, Z2; \
	VSUBPS Z2, Z0, Z0; \
	VMOVUPS.Z (R10)(BX*4), k, Z1; \
	VFMADD231PS Z0, Z0, Z1; \
	VMOVUPS Z1, k, (R10)(BX*4)

// func colSqDevAVX512(x, mean, s *float32, c, p int)
TEXT ·colSqDevAVX512(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ mean+8(FP), R9
	MOVQ s+16(FP), R10
	MOVQ c+24(FP), R13
	MOVQ p+32(FP), R8
	ROWMASKS
	MOVQ R13, DX
	ANDQ $-16, DX
	TESTQ R8, R8
	JEQ  sqdone

sqrow:
	XORQ BX, BX
	CMPQ BX, DX
	JGE  sqtail

sqfull:
	SQDEV(K1)
	ADDQ $16, BX
	CMPQ BX, DX
	JLT  sqfull

sqtail:
	CMPQ BX, R13
	JGE  sqnext
	SQDEV(K2)

sqnext:
	LEAQ (SI)(R13*4), SI
	DECQ R8
	JNE  sqrow

sqdone:
	VZEROUPPER
	RET
