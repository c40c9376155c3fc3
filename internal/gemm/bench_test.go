package gemm

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"gonum.org/v1/gonum/blas"
	gonumblas "gonum.org/v1/gonum/blas/gonum"
)

// benchShapes are the score networks' products: the U-Net's direct (im2col)
// convolutions at batch 64 as model/op_conv.go cuts them (forward, weight
// gradient, input gradient; rows are pixels of a chunk of samples, columns
// output channels) and the MLP's layers.
var benchShapes = []struct {
	name           string
	transA, transB bool
	m, n, k        int
}{
	{"fwd/28px/1568x32x288", false, true, 1568, 32, 288},
	{"fwd/up28/784x32x864", false, true, 784, 32, 864},
	{"fwd/14px/784x64x576", false, true, 784, 64, 576},
	{"fwd/up14/196x64x1728", false, true, 196, 64, 1728},
	{"fwd/7px/441x128x1152", false, true, 441, 128, 1152},
	{"wgrad/28px/32x288x1568", true, false, 32, 288, 1568},
	{"wgrad/14px/64x576x784", true, false, 64, 576, 784},
	{"wgrad/7px/128x1152x441", true, false, 128, 1152, 441},
	{"igrad/up28/784x96x288", false, true, 784, 96, 288},
	{"igrad/up14/196x192x576", false, true, 196, 192, 576},
	{"mlp/in/512x128x3", false, true, 512, 128, 3},
	{"mlp/hidden/512x128x128", false, true, 512, 128, 128},
	{"mlp/wgrad/128x128x512", true, false, 128, 128, 512},
	{"mlp/igrad/512x128x128", false, false, 512, 128, 128},
}

func BenchmarkSgemm(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	procs := runtime.GOMAXPROCS(0)
	for _, s := range benchShapes {
		ar, ac := s.m, s.k
		if s.transA {
			ar, ac = s.k, s.m
		}
		br, bc := s.k, s.n
		if s.transB {
			br, bc = s.n, s.k
		}
		a, bm, c := randMat(r, ar, ac, ac), randMat(r, br, bc, bc), make([]float32, s.m*s.n)
		flop := 2 * float64(s.m) * float64(s.n) * float64(s.k)
		run := func(name string, f func()) {
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				cpu0, ok0 := processCPUTime()
				for b.Loop() {
					f()
				}
				cpu1, ok1 := processCPUTime()
				b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				// Per CPU-second of this process: with 2 goroutines this is
				// per core, and it hides time lost to other processes.
				if ok0 && ok1 && cpu1 > cpu0 {
					b.ReportMetric(flop*float64(b.N)/(cpu1-cpu0).Seconds()/1e9, "GFLOP/cpu-s")
				}
			})
		}
		run(fmt.Sprintf("%s/%s/procs=%d", s.name, defaultKernel.name, procs), func() {
			sgemm(defaultKernel, procs, s.transA, s.transB, s.m, s.n, s.k, 1, a, ac, bm, bc, 0, c, s.n)
		})
		// Every kernel on one core: per-core speed, the CPU classes compared.
		for _, kern := range archKernels() {
			run(fmt.Sprintf("%s/%s/procs=1", s.name, kern.name), func() {
				sgemm(kern, 1, s.transA, s.transB, s.m, s.n, s.k, 1, a, ac, bm, bc, 0, c, s.n)
			})
		}
		run(s.name+"/gonum", func() {
			var impl gonumblas.Implementation
			impl.Sgemm(blasTrans(s.transA), blasTrans(s.transB), s.m, s.n, s.k, 1, a, ac, bm, bc, 0, c, s.n)
		})
	}
}

func blasTrans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// BenchmarkSgemmBatch times the Winograd convolution's products: 36 (F(4×4))
// GEMMs of a chunk of tiles × Ci by Ci × Co, on one goroutine.
func BenchmarkSgemmBatch(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range []struct {
		name           string
		transA, transB bool
		m, n, k        int
	}{
		{"fwd/56x32x32", false, true, 56, 32, 32},
		{"fwd/112x32x32", false, true, 112, 32, 32},
		{"fwd/28x64x64", false, true, 28, 64, 64},
		{"fwd/14x128x128", false, true, 14, 128, 128},
		{"fwd/48x128x128", false, true, 48, 128, 128},
		{"fwd/nt/56x32x32", false, false, 56, 32, 32},
		{"wgrad/32x32x56", true, false, 32, 32, 56},
		{"wgrad/128x128x14", true, false, 128, 128, 14},
	} {
		const count = 36
		ar, ac := s.m, s.k
		if s.transA {
			ar, ac = s.k, s.m
		}
		br, bc := s.k, s.n
		if s.transB {
			br, bc = s.n, s.k
		}
		a, bm, c := randMat(r, count, ar*ac, ar*ac), randMat(r, count, br*bc, br*bc), make([]float32, count*s.m*s.n)
		flop := 2 * float64(s.m) * float64(s.n) * float64(s.k) * count
		b.Run(s.name+"/"+defaultKernel.name, func(b *testing.B) {
			cpu0, ok0 := processCPUTime()
			for b.Loop() {
				sgemmBatch(defaultKernel, s.transA, s.transB, s.m, s.n, s.k, 1, a, ac, ar*ac, bm, bc, br*bc, 0, c, s.n, s.m*s.n, count)
			}
			cpu1, ok1 := processCPUTime()
			b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			if ok0 && ok1 && cpu1 > cpu0 {
				b.ReportMetric(flop*float64(b.N)/(cpu1-cpu0).Seconds()/1e9, "GFLOP/cpu-s")
			}
		})
	}
}
