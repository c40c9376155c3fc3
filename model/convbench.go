package model

import (
	"fmt"
	"time"

	"gorgonia.org/gorgonia"

	"github.com/ncsn/ncsn/internal/gemm"
	"github.com/ncsn/ncsn/internal/keyrand"
)

// ConvLayerBench is the speed of one convolution layer of a network, alone,
// in one pass with one algorithm. GFLOPS counts the direct convolution's
// multiply-adds (×2) whatever the algorithm, so algorithms compare by it.
type ConvLayerBench struct {
	Kernel string  `json:"kernel"` // the gemm kernel class: avx512, avx2 or generic
	Layer  string  `json:"layer"`
	Size   string  `json:"size"` // H×W, Ci→Co, stride
	Pass   string  `json:"pass"` // fwd, or bwd (weight and input gradients)
	Algo   string  `json:"algo"` // direct, wino2 or wino4
	Chosen bool    `json:"chosen"`
	GFLOP  float64 `json:"gflop"`
	Sec    float64 `json:"sec"` // best of the timed runs
	GFLOPS float64 `json:"gflops"`
}

// BenchConvLayers times every convolution of the network cfg builds for
// per-example data of the given shape at batch size batch: each layer alone,
// forward and backward, with every algorithm that applies to it, iters runs
// each (interleaved, best taken: other processes only ever add time). Chosen
// marks the algorithm the network uses (NCSN_CONV or the measured rule).
func BenchConvLayers(cfg Config, shape []int, batch, iters int) ([]ConvLayerBench, error) {
	if iters < 1 {
		return nil, fmt.Errorf("model: bench: iters %d, want >= 1", iters)
	}
	net, err := New(cfg, shape)
	if err != nil {
		return nil, err
	}
	layers, err := net.convLayers(batch)
	if err != nil {
		return nil, err
	}
	var out []ConvLayerBench
	for _, l := range layers {
		algos := []convAlgo{convDirect}
		if l.g.S == 1 {
			algos = append(algos, convWino2, convWino4)
		}
		best, err := timeConv(l, algos, iters)
		if err != nil {
			return nil, err
		}
		g := l.g
		flop := 2 * float64(g.B*g.Ho*g.Wo*g.Co*g.K) / 1e9
		size := fmt.Sprintf("%dx%d %d->%d s%d", g.H, g.W, g.Ci, g.Co, g.S)
		for i, a := range algos {
			for p, pass := range []string{"fwd", "bwd"} {
				fl, chosen := flop, a == l.fwd
				if p == 1 {
					chosen = a == l.bwd
					if l.needDx {
						fl *= 2
					}
				}
				sec := best[i][p].Seconds()
				out = append(out, ConvLayerBench{Kernel: gemm.Kernel(), Layer: l.name, Size: size, Pass: pass, Algo: a.String(), Chosen: chosen,
					GFLOP: round(fl, 4), Sec: round(sec, 6), GFLOPS: round(fl/sec, 1)})
			}
		}
	}
	return out, nil
}

// timeConv returns the best of iters times of layer l's forward and
// backward with each algorithm, the algorithms interleaved so that a slow
// spell of the machine hits them alike.
func timeConv(l convLayer, algos []convAlgo, iters int) ([][2]time.Duration, error) {
	timers := make([]*convTimer, len(algos))
	for i, a := range algos {
		var err error
		if timers[i], err = newConvTimer(l, a); err != nil {
			return nil, err
		}
	}
	best := make([][2]time.Duration, len(algos))
	for it := -1; it < iters; it++ { // a first, untimed run sizes the scratch
		for i, tm := range timers {
			for p, run := range []func(){tm.fwd, tm.bwd} {
				t0 := time.Now()
				run()
				if d := time.Since(t0); it >= 0 && (it == 0 || d < best[i][p]) {
					best[i][p] = d
				}
			}
		}
	}
	return best, nil
}

// convLayers lists the convolutions of the network's graph at batch size
// batch, with the algorithms chosen for them.
func (n *NetOf[T]) convLayers(batch int) ([]convLayer, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	b := newBuilder(n, batch, false)
	var ls []convLayer
	b.convs = func(l convLayer) { ls = append(ls, l) }
	if _, err := b.forward(&feed[T]{net: n, batch: batch}); err != nil {
		return nil, err
	}
	return ls, nil
}

// convTimer runs one convolution layer's forward and backward ops directly,
// on random data.
type convTimer struct {
	fwd, bwd func()
}

func newConvTimer(l convLayer, algo convAlgo) (*convTimer, error) {
	g := l.g
	in := func(name string, shape ...int) pspec { return pspec{name, shape, 1, kWeight} }
	specs := append([]pspec{in("x", g.B, g.H, g.W, g.Ci), in("dy", g.B, g.Ho, g.Wo, g.Co)}, convSpecs("c", g.Ci, g.Co)...)
	if l.add {
		specs = append(specs, in("add", g.B, g.Co))
	}
	if l.res {
		specs = append(specs, in("res", g.B, g.Ho, g.Wo, g.Co))
	}
	n := &Net{cfg: Config{Arch: "bench"}, conv: convPolicy{forced: true, algo: algo}}
	n.p, n.specs = layout[float32](specs)
	r := keyrand.New(0xc0, 0x1)
	for i := range n.p.Data {
		n.p.Data[i] = float32(r.Norm())
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	b := newBuilder(n, g.B, true)
	nodes := gorgonia.Nodes{b.param("x"), b.param("c.weight"), b.param("c.bias")}
	var add, res *gorgonia.Node
	if l.add {
		add = b.param("add")
		nodes = append(nodes, add)
	}
	if l.res {
		res = b.param("res")
		nodes = append(nodes, res)
	}
	y, err := b.conv("c", nodes[0], g.Co, g.S, add, res, l.needDx)
	if err != nil {
		return nil, err
	}
	op := y.Op().(*node[float32])
	grads, err := op.SymDiff(nodes, y, b.param("dy"))
	if err != nil {
		return nil, err
	}
	bop := grads[1].Op().(*node[float32])
	data := func(nd *gorgonia.Node) []float32 { return nd.Value().Data().([]float32) }
	ins := make([][]float32, len(nodes))
	for i, nd := range nodes {
		ins[i] = data(nd)
	}
	yb, dwb := op.out.Data().([]float32), bop.out.Data().([]float32)
	bins := [][]float32{ins[0], data(b.param("dy"))}
	return &convTimer{
		fwd: func() { op.run(yb, ins) },
		bwd: func() { bop.run(dwb, bins) },
	}, nil
}
