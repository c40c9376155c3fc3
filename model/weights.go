package model

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/ncsn/ncsn/internal/safetensors"
)

// WeightsFormat marks an exported weights file: one float32 tensor per parameter, named
// as the network's parameters are (which are PyTorch's state_dict names for the
// reference networks), without the optimizer state a checkpoint carries.
const WeightsFormat = "ncsn-weights/1"

// Metadata keys of a weights file beside MetaFormat, MetaStep and MetaConfig.
const (
	MetaWeights = "weights" // "ema" or "raw"
	MetaSource  = "source"  // the checkpoint it was exported from
)

// WriteWeights writes the parameters data, laid out as layout, to path (atomically, as
// safetensors) with the step and meta in its metadata.
func WriteWeights(path string, layout *Params, data []float32, step int64, meta map[string]string) error {
	if len(data) != len(layout.Data) {
		return fmt.Errorf("model: weights: %d values for a layout of %d", len(data), len(layout.Data))
	}
	f := &safetensors.File{Metadata: map[string]string{}}
	for k, v := range meta {
		f.Metadata[k] = v
	}
	f.Metadata[MetaFormat] = WeightsFormat
	f.Metadata[MetaStep] = strconv.FormatInt(step, 10)
	for i, name := range layout.Names {
		n := prod(layout.Shapes[i])
		if err := f.AddF32(name, layout.Shapes[i], data[layout.Offsets[i]:layout.Offsets[i]+n]); err != nil {
			return fmt.Errorf("model: weights %s: %w", path, err)
		}
	}
	if err := safetensors.WriteFile(path, f); err != nil {
		return fmt.Errorf("model: write weights: %w", err)
	}
	return nil
}

// ReadWeights reads a weights file into a copy of layout's data; every parameter of
// layout must be there with its shape.
func ReadWeights(path string, layout *Params) ([]float32, map[string]string, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("model: read weights: %w", err)
	}
	if v := f.Metadata[MetaFormat]; v != WeightsFormat {
		return nil, nil, fmt.Errorf("model: weights %s: format %q, want %q", path, v, WeightsFormat)
	}
	out := make([]float32, len(layout.Data))
	for i, name := range layout.Names {
		v, shape, err := f.F32(name)
		if err != nil {
			return nil, nil, fmt.Errorf("model: weights %s: %w", path, err)
		}
		if !slices.Equal(shape, layout.Shapes[i]) {
			return nil, nil, fmt.Errorf("model: weights %s: %s has shape %v, the network %v", path, name, shape, layout.Shapes[i])
		}
		copy(out[layout.Offsets[i]:], v)
	}
	return out, f.Metadata, nil
}
