package allreduce

import "slices"

// Quants are the names of the quantisations, as ParseCodec (and so the run config's
// allreduce.codec) takes them.
func Quants() []string { return slices.Clone(quantNames[:]) }

// Compressors are the names of the lossless stages, as ParseCodec (and the run config's
// allreduce.compressor) takes them.
func Compressors() []string { return slices.Clone(compressorNames[:]) }
