// Package keyrand draws reproducible random numbers from a stream keyed by
// integers, e.g. (seed, step, global sample position). The same key gives the
// same stream on every machine and Go version, so the mathematics of a training
// step does not depend on which worker computes which sample.
package keyrand

import (
	"math"
	"math/bits"
)

// Stream is a PCG-DXSM generator whose state is derived from a key. It is not
// safe for concurrent use; make one per key.
type Stream struct {
	hi, lo uint64
	// spare holds the second Box–Muller normal.
	spare    float64
	hasSpare bool
}

// New returns the stream for the given key. Keys of different lengths never
// collide by construction: the length is mixed in first.
func New(key ...uint64) *Stream {
	s := &Stream{}
	s.Reset(key...)
	return s
}

// Reset re-keys s in place so hot loops need not allocate.
func (s *Stream) Reset(key ...uint64) {
	h1 := mix(0x9e3779b97f4a7c15 ^ uint64(len(key)))
	h2 := mix(0xd1b54a32d192ed03 + uint64(len(key)))
	for _, k := range key {
		h1 = mix(h1 ^ k)
		h2 = mix(h2 + k*0xbf58476d1ce4e5b9)
	}
	s.hi, s.lo = h1, h2|1
	s.hasSpare = false
}

// mix is splitmix64's finaliser.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Uint64 is PCG-DXSM (128-bit LCG state, the output function of numpy's PCG64DXSM).
func (s *Stream) Uint64() uint64 {
	const (
		mulHi = 2549297995355413924
		mulLo = 4865540595714422341
		incHi = 6364136223846793005
		incLo = 1442695040888963407
	)
	// state = state*mul + inc (128-bit).
	hi, lo := bits.Mul64(s.lo, mulLo)
	hi += s.hi*mulLo + s.lo*mulHi
	lo, c := bits.Add64(lo, incLo, 0)
	hi += incHi + c
	s.hi, s.lo = hi, lo

	const cheap = 0xda942042e4dd58b5
	h, l := hi, lo|1
	h ^= h >> 32
	h *= cheap
	h ^= h >> 48
	h *= l
	return h
}

// Float64 is uniform on [0, 1) with 53 random bits.
func (s *Stream) Float64() float64 { return float64(s.Uint64()>>11) * (1.0 / (1 << 53)) }

// IntN is uniform on [0, n) without modulo bias (Lemire's method). n must be > 0.
func (s *Stream) IntN(n int) int {
	if n <= 0 {
		panic("keyrand: IntN with n <= 0")
	}
	un := uint64(n)
	hi, lo := bits.Mul64(s.Uint64(), un)
	if lo < un {
		thresh := -un % un
		for lo < thresh {
			hi, lo = bits.Mul64(s.Uint64(), un)
		}
	}
	return int(hi)
}

// Norm is a standard normal draw (Box–Muller; spelled out here rather than
// taken from math/rand so that streams stay fixed across Go versions).
func (s *Stream) Norm() float64 {
	if s.hasSpare {
		s.hasSpare = false
		return s.spare
	}
	u1 := 1 - s.Float64() // (0, 1]: log is finite
	u2 := s.Float64()
	r := math.Sqrt(-2 * math.Log(u1))
	sin, cos := math.Sincos(2 * math.Pi * u2)
	s.spare, s.hasSpare = r*sin, true
	return r * cos
}

// Perm fills p with a uniform random permutation of 0..len(p)-1 (Fisher–Yates).
func (s *Stream) Perm(p []int) {
	for i := range p {
		p[i] = i
	}
	for i := len(p) - 1; i > 0; i-- {
		j := s.IntN(i + 1)
		p[i], p[j] = p[j], p[i]
	}
}
