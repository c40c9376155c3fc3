package model

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
)

// State is everything a step changes: parameters, Adam moments, the EMA of
// the parameters and the step count. The coordinator holds the canonical
// State; every worker holds a replica and applies the same updates, so all of
// them stay bitwise equal.
type State struct {
	Params []float32 // on a replica, the network's own flat buffer
	EMA    []float32 // nil when the EMA is disabled
	Adam   *Adam
	decay  float64
}

// SampleWeights are the weights samples are drawn with: the EMA, or the
// parameters when the EMA is disabled.
func (s *State) SampleWeights() []float32 {
	if s.EMA != nil {
		return s.EMA
	}
	return s.Params
}

// NewState wraps params (not copied) with fresh optimizer state; the EMA
// starts at params.
func NewState(params []float32, opt AdamConfig, emaDecay float64) (*State, error) {
	a, err := NewAdam(opt, len(params))
	if err != nil {
		return nil, err
	}
	if !(emaDecay >= 0 && emaDecay < 1) {
		return nil, fmt.Errorf("model: ema decay %v, want [0, 1)", emaDecay)
	}
	s := &State{Params: params, Adam: a, decay: emaDecay}
	if emaDecay > 0 {
		s.EMA = append([]float32(nil), params...)
	}
	return s, nil
}

// Step is the number of updates applied.
func (s *State) Step() int64 { return s.Adam.Step }

// Apply divides the gradient SUM by the global batch (in place) and applies
// one Adam update and the EMA. It returns the mean gradient's norm.
func (s *State) Apply(gradSum []float32, batch int) (float64, error) {
	if batch < 1 {
		return 0, fmt.Errorf("model: apply: batch %d", batch)
	}
	inv := float32(1 / float64(batch))
	for i := range gradSum {
		gradSum[i] *= inv
	}
	norm, err := s.Adam.Update(s.Params, gradSum)
	if err != nil {
		return norm, fmt.Errorf("model: apply step %d: %w", s.Adam.Step+1, err)
	}
	if s.EMA != nil {
		// Warm up the decay, (1+t)/(10+t) capped at the configured value, so
		// that a short run's EMA is not dominated by the initial weights.
		t := float64(s.Adam.Step)
		EMA(s.EMA, s.Params, min(s.decay, (1+t)/(10+t)))
	}
	return norm, nil
}

// CopyFrom makes s equal to o (same sizes required), keeping s's buffers.
func (s *State) CopyFrom(o *State) error {
	if len(s.Params) != len(o.Params) || (s.EMA == nil) != (o.EMA == nil) {
		return fmt.Errorf("model: copy state: shapes differ")
	}
	copy(s.Params, o.Params)
	copy(s.EMA, o.EMA)
	copy(s.Adam.M, o.Adam.M)
	copy(s.Adam.V, o.Adam.V)
	s.Adam.Step = o.Adam.Step
	return nil
}

// Hash is a SHA-256 over the step and every float's bits: replicas report it
// so that a diverged replica is caught and resynchronised.
func (s *State) Hash() [32]byte {
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(s.Adam.Step))
	h.Write(b[:])
	buf := make([]byte, 0, 1<<16)
	for _, v := range [][]float32{s.Params, s.EMA, s.Adam.M, s.Adam.V} {
		for _, f := range v {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(f))
			if len(buf) == cap(buf) {
				h.Write(buf)
				buf = buf[:0]
			}
		}
	}
	h.Write(buf)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
