package model

import "golang.org/x/sys/cpu"

// AVX-512 loops of the float32 GroupNorm+SiLU (gn_amd64.s): the Go loops run
// one value at a time, and these ops touch every activation four times a step.
// Each wrapper reports false, doing nothing, where the CPU lacks AVX-512F;
// the caller then runs its portable loop. p is len(x)/c rows of c channels.

var hasAVX512 = cpu.X86.HasAVX512F

//go:noescape
func gnSiluAVX512(x, a, d, y, sig *float32, c, p int)

//go:noescape
func gnDuAVX512(x, dy, sig, a, d, du, s1, s2 *float32, c, p int)

//go:noescape
func gnDxAVX512(x, a, b, t, dx *float32, c, p int)

//go:noescape
func colSumAVX512(x, s *float32, c, p int)

//go:noescape
func colSqDevAVX512(x, mean, s *float32, c, p int)

// gnSilu32 sets u = a·x + d per channel, sig = σ(u), y = u·σ(u).
func gnSilu32(x, a, d, y, sig []float32, c int) bool {
	if !hasAVX512 || len(x) == 0 {
		return false
	}
	y, sig, a, d = y[:len(x)], sig[:len(x)], a[:c], d[:c]
	gnSiluAVX512(&x[0], &a[0], &d[0], &y[0], &sig[0], c, len(x)/c)
	return true
}

// gnDu32 sets du = dy·σ·(1 + u·(1−σ)) with u = a·x + d, and adds Σ du into
// s1 and Σ du·x into s2 per channel.
func gnDu32(x, dy, sig, a, d, du, s1, s2 []float32, c int) bool {
	if !hasAVX512 || len(x) == 0 {
		return false
	}
	dy, sig, du, a, d, s1, s2 = dy[:len(x)], sig[:len(x)], du[:len(x)], a[:c], d[:c], s1[:c], s2[:c]
	gnDuAVX512(&x[0], &dy[0], &sig[0], &a[0], &d[0], &du[0], &s1[0], &s2[0], c, len(x)/c)
	return true
}

// gnDx32 sets dx = a·dx + b·x + t per channel.
func gnDx32(x, a, b, t, dx []float32, c int) bool {
	if !hasAVX512 || len(x) == 0 {
		return false
	}
	dx, a, b, t = dx[:len(x)], a[:c], b[:c], t[:c]
	gnDxAVX512(&x[0], &a[0], &b[0], &t[0], &dx[0], c, len(x)/c)
	return true
}

// colSum32 adds the rows of x into s.
func colSum32(x, s []float32, c int) bool {
	if !hasAVX512 || len(x) == 0 {
		return false
	}
	s = s[:c]
	colSumAVX512(&x[0], &s[0], c, len(x)/c)
	return true
}

// colSqDev32 adds (x − mean)² of the rows of x into s.
func colSqDev32(x, mean, s []float32, c int) bool {
	if !hasAVX512 || len(x) == 0 {
		return false
	}
	mean, s = mean[:c], s[:c]
	colSqDevAVX512(&x[0], &mean[0], &s[0], c, len(x)/c)
	return true
}
