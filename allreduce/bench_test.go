package allreduce

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkAllReduce runs 4 in-process members over loopback gRPC. Speed against gloo is
// measured by `ncsn bench allreduce` (separate processes) beside torch_ref.py.
func BenchmarkAllReduce(b *testing.B) {
	for _, mib := range []int{1, 8} {
		for _, c := range []Codec{{}, {QuantBF16, CompressNone}, {QuantInt8, CompressNone}, {QuantInt8, CompressZstd}, {QuantInt4, CompressNone}, {QuantInt4, CompressZstd}} {
			b.Run(fmt.Sprintf("%dMiB/%v", mib, c), func(b *testing.B) {
				ms := startMembers(b, 4, func(cfg *Config) { cfg.ChunkBytes = DefaultChunkBytes })
				n := mib << 20 / 4
				bufs := make([][]float32, len(ms))
				for i := range bufs {
					bufs[i] = make([]float32, n)
				}
				b.SetBytes(int64(mib << 20))
				var wire int64
				for i := 0; b.Loop(); i++ {
					out := reduceAll(context.Background(), rings(ms), Op{Run: "b", Epoch: 1, Step: uint64(i), Members: addrs(ms), Codec: c}, bufs, nil)
					for _, o := range out {
						if o.err != nil {
							b.Fatal(o.err)
						}
					}
					wire += out[0].res.WireBytesSent
				}
				b.ReportMetric(float64(wire)/float64(b.N), "wire_bytes/op")
			})
		}
	}
}
