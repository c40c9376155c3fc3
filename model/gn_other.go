//go:build !amd64

package model

// Without the amd64 assembly the callers run their portable loops.

func gnSilu32(x, a, d, y, sig []float32, c int) bool            { return false }
func gnDu32(x, dy, sig, a, d, du, s1, s2 []float32, c int) bool { return false }
func gnDx32(x, a, b, t, dx []float32, c int) bool               { return false }
func colSum32(x, s []float32, c int) bool                       { return false }
func colSqDev32(x, mean, s []float32, c int) bool               { return false }
