package coordinator

import (
	"strings"
	"testing"

	"github.com/ncsn/ncsn/allreduce"
	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/proto/coordpb"
)

// TestReadGradient: a commit's gradient is taken raw or in the run's ring encoding, and
// refused (never half-applied) when the encoding is not the run's or does not decode.
func TestReadGradient(t *testing.T) {
	rc, err := config.Load("", []string{"data.name=gmm", "allreduce.codec=int8", "allreduce.compressor=zstd"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Run: rc, Out: t.TempDir(), Listen: "127.0.0.1:0", Gossip: "127.0.0.1:0",
		Secret: []byte("0123456789abcdef0123456789abcdef"), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := len(s.grad)
	want := make([]float32, n)
	for i := range want {
		want[i] = float32(i%97) / 7
	}
	enc, err := allreduce.NewEncoder(s.codec)
	if err != nil {
		t.Fatal(err)
	}
	// Two spans, sent in reverse order; the decoded values are what members apply.
	half := n / 2
	a, b := enc.Encode(nil, want[:half], nil), enc.Encode(nil, want[half:], nil)
	dec, _ := allreduce.NewDecoder(s.codec)
	if err := dec.DecodeSpans(want, []allreduce.EncodedSpan{{Offset: 0, Count: half, Data: a}, {Offset: half, Count: n - half, Data: b}}); err != nil {
		t.Fatal(err)
	}
	good := func() *coordpb.EncodedGradient {
		return &coordpb.EncodedGradient{Codec: "int8+zstd", Length: uint64(n), Spans: []*coordpb.EncodedSpan{
			{Offset: uint64(half), Count: uint64(n - half), Data: b}, {Offset: 0, Count: uint64(half), Data: a}}}
	}
	for _, tc := range []struct {
		name string
		req  *coordpb.CommitRequest
		err  string
	}{
		{"encoded", &coordpb.CommitRequest{Encoded: good()}, ""},
		{"raw", &coordpb.CommitRequest{Gradient: cluster.AppendFloats(nil, want)}, ""},
		{"other codec", &coordpb.CommitRequest{Encoded: func() *coordpb.EncodedGradient { g := good(); g.Codec = "bf16"; return g }()}, "want int8+zstd"},
		{"other length", &coordpb.CommitRequest{Encoded: func() *coordpb.EncodedGradient { g := good(); g.Length++; return g }()}, "values"},
		{"missing span", &coordpb.CommitRequest{Encoded: func() *coordpb.EncodedGradient { g := good(); g.Spans = g.Spans[:1]; return g }()}, "corrupt"},
		{"huge offset", &coordpb.CommitRequest{Encoded: func() *coordpb.EncodedGradient { g := good(); g.Spans[0].Offset = 1 << 62; return g }()}, "span"},
		{"garbled", &coordpb.CommitRequest{Encoded: func() *coordpb.EncodedGradient {
			g := good()
			g.Spans[1].Data = []byte("not zstd at all")
			return g
		}()}, "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clear(s.grad)
			err := s.readGradient(tc.req)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if s.grad[i] != want[i] {
					t.Fatalf("[%d] = %g, want %g", i, s.grad[i], want[i])
				}
			}
		})
	}
}
