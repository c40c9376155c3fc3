package model

import (
	"fmt"
	"math"
	"os"

	"github.com/ncsn/ncsn/internal/gemm"
)

// convEnv forces one convolution algorithm on every layer it applies to
// (stride 1 for Winograd), e.g. for bitwise-reproducible comparisons between
// machines whose measured choices differ: NCSN_CONV=direct, wino2, wino4, or
// auto (the default: the measured rule below).
const convEnv = "NCSN_CONV"

// convAlgo is how a convolution layer computes.
type convAlgo uint8

const (
	convDirect convAlgo = iota // im2col and one GEMM
	convWino2                  // Winograd F(2×2, 3×3)
	convWino4                  // Winograd F(4×4, 3×3)
)

var convAlgoNames = [...]string{convDirect: "direct", convWino2: "wino2", convWino4: "wino4"}

func (a convAlgo) String() string { return convAlgoNames[a] }

func (a convAlgo) spec() *winoSpec {
	switch a {
	case convWino2:
		return wino2
	case convWino4:
		return wino4
	}
	return nil
}

// convPolicy picks each layer's algorithms: forced, or by the measured rule.
type convPolicy struct {
	forced bool
	algo   convAlgo
	// split, with forced, runs the backward with bwd instead (tests: the rule
	// mixes algorithms, e.g. wino2 forward and wino4 backward).
	split bool
	bwd   convAlgo
}

func parseConvPolicy(s string) (convPolicy, error) {
	switch s {
	case "", "auto":
		return convPolicy{}, nil
	}
	for a, name := range convAlgoNames {
		if s == name {
			return convPolicy{forced: true, algo: convAlgo(a)}, nil
		}
	}
	return convPolicy{}, fmt.Errorf("model: %s=%q: want auto, direct, wino2 or wino4", convEnv, s)
}

// convPolicyFromEnv reads NCSN_CONV.
func convPolicyFromEnv() (convPolicy, error) { return parseConvPolicy(os.Getenv(convEnv)) }

// choose returns the forward and backward algorithms of layer g in element
// type T. The rule is a table measured on each kernel class (convrule_table.go),
// not a timing taken when the network is built: a worker restarted after a
// crash must compute the same gradients as before, bit for bit, and timings
// taken on a busy machine would not repeat. float64 networks (gradient
// checks) keep the direct sum, the more accurate one, unless forced.
func choose[T Float](p convPolicy, g *convGeom) (fwd, bwd convAlgo) {
	if g.S != 1 {
		return convDirect, convDirect
	}
	if p.forced && p.split {
		return p.algo, p.bwd
	}
	if p.forced {
		return p.algo, p.algo
	}
	if !is32[T]() {
		return convDirect, convDirect
	}
	return convRule(gemm.Kernel(), g.Ci, g.Co, g.Ho, g.Wo)
}

// convRulePoint is one measurement: for ci → co channels on s×s images, the
// fastest forward and backward algorithms with the kernel class isa, and the
// times of each algorithm relative to direct's (fwd, bwd).
type convRulePoint struct {
	isa       string
	ci, co, s int
	fwd, bwd  convAlgo
	rel       [3][2]float64
}

// convRule looks up the measured point nearest to a layer in log-scaled
// (Ci, Co, √(H·W)). Kernel classes without measurements (generic) compute
// directly: Winograd's transforms have no portable fast path.
func convRule(isa string, ci, co, h, w int) (fwd, bwd convAlgo) {
	sz := math.Sqrt(float64(h * w))
	best, fwd, bwd := math.Inf(1), convDirect, convDirect
	for _, p := range convRuleTable {
		if p.isa != isa {
			continue
		}
		di := math.Log2(float64(ci) / float64(p.ci))
		do := math.Log2(float64(co) / float64(p.co))
		ds := math.Log2(sz / float64(p.s))
		if d := di*di + do*do + ds*ds; d < best {
			best, fwd, bwd = d, p.fwd, p.bwd
		}
	}
	return fwd, bwd
}
