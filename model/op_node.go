package model

import (
	"fmt"
	"hash"
	"hash/fnv"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/chewxy/hm"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/ncsn/ncsn/internal/gemm"
)

// Float is the element type of a network: float32 for training, float64 for
// gradient checks.
type Float interface{ float32 | float64 }

func dtypeOf[T Float]() tensor.Dtype {
	var z T
	if _, ok := any(z).(float32); ok {
		return tensor.Float32
	}
	return tensor.Float64
}

// opIDs makes every node's op distinct: gorgonia merges nodes whose ops hash
// equal and whose children are the same, and every op here owns buffers.
var opIDs atomic.Uint64

// node is the one gorgonia Op type of this package. Each instance belongs to
// one graph node and owns its output buffer, so a machine's Reset never makes
// the next run allocate: Do writes into the same memory every step. It does not
// implement UsePreallocDoer on purpose: the tape machine would then hand it a
// register that may hold another node's buffer.
type node[T Float] struct {
	id     uint64
	name   string
	inDims []int // per input: tensor rank, or 0 for a scalar
	out    *tensor.Dense
	scalar gorgonia.Value // scalar output (the loss), when out is nil
	setSc  func(T)
	ins    [][]T
	one    [][1]T // backing for scalar inputs
	run    func(out []T, in [][]T)
	diff   func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error)
	wrt    []bool
}

// apply adds a node computing run(out, inputs) with the given output shape
// (nil: a scalar) and output backing (nil: allocated here).
func apply[T Float](name string, shape []int, backing []T, run func(out []T, in [][]T), wrt []bool,
	diff func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error), inputs ...*gorgonia.Node) (*gorgonia.Node, error) {
	op := &node[T]{id: opIDs.Add(1), name: name, run: run, diff: diff, wrt: wrt}
	for _, in := range inputs {
		op.inDims = append(op.inDims, in.Shape().Dims())
	}
	op.ins = make([][]T, len(inputs))
	op.one = make([][1]T, len(inputs))
	if shape != nil {
		n := prod(shape)
		if backing == nil {
			backing = make([]T, n)
		}
		if len(backing) != n {
			return nil, fmt.Errorf("model: %s: output backing has %d values, want %d", name, len(backing), n)
		}
		op.out = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(backing))
	} else {
		var z T
		switch any(z).(type) {
		case float32:
			v := new(gorgonia.F32)
			op.scalar, op.setSc = v, func(x T) { *v = gorgonia.F32(x) }
		default:
			v := new(gorgonia.F64)
			op.scalar, op.setSc = v, func(x T) { *v = gorgonia.F64(x) }
		}
	}
	n, err := gorgonia.ApplyOp(op, inputs...)
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", name, err)
	}
	return n, nil
}

func prod(s []int) int {
	n := 1
	for _, v := range s {
		n *= v
	}
	return n
}

func (op *node[T]) Arity() int { return len(op.inDims) }

func (op *node[T]) Type() hm.Type {
	dt := dtypeOf[T]()
	ts := make([]hm.Type, 0, len(op.inDims)+1)
	for _, d := range op.inDims {
		if d == 0 {
			ts = append(ts, dt)
		} else {
			ts = append(ts, gorgonia.TensorType{Dims: d, Of: dt})
		}
	}
	if op.out != nil {
		ts = append(ts, gorgonia.TensorType{Dims: op.out.Dims(), Of: dt})
	} else {
		ts = append(ts, dt)
	}
	return hm.NewFnType(ts...)
}

func (op *node[T]) InferShape(...gorgonia.DimSizer) (tensor.Shape, error) {
	if op.out == nil {
		return tensor.ScalarShape(), nil
	}
	return op.out.Shape().Clone(), nil
}

func (op *node[T]) Do(vals ...gorgonia.Value) (gorgonia.Value, error) {
	if len(vals) != len(op.inDims) {
		return nil, fmt.Errorf("model: %s: %d inputs, want %d", op.name, len(vals), len(op.inDims))
	}
	for i, v := range vals {
		switch v := v.(type) {
		case *tensor.Dense:
			d, ok := v.Data().([]T)
			if !ok {
				return nil, fmt.Errorf("model: %s: input %d is %v", op.name, i, v.Dtype())
			}
			op.ins[i] = d
		case *gorgonia.F32:
			op.one[i][0] = T(*v)
			op.ins[i] = op.one[i][:]
		case *gorgonia.F64:
			op.one[i][0] = T(*v)
			op.ins[i] = op.one[i][:]
		default:
			return nil, fmt.Errorf("model: %s: input %d has type %T", op.name, i, v)
		}
	}
	if op.out == nil {
		var s [1]T
		op.run(s[:], op.ins)
		op.setSc(s[0])
		return op.scalar, nil
	}
	op.run(op.out.Data().([]T), op.ins)
	return op.out, nil
}

func (op *node[T]) ReturnsPtr() bool     { return false }
func (op *node[T]) CallsExtern() bool    { return false }
func (op *node[T]) OverwritesInput() int { return -1 }
func (op *node[T]) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "ncsn.%s#%d", op.name, op.id)
}
func (op *node[T]) Hashcode() uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}
func (op *node[T]) String() string { return op.name }

func (op *node[T]) DiffWRT(n int) []bool {
	if op.wrt == nil {
		return make([]bool, n)
	}
	return op.wrt
}

func (op *node[T]) SymDiff(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	if op.diff == nil {
		return nil, fmt.Errorf("model: %s is not differentiable", op.name)
	}
	return op.diff(in, out, grad)
}

// gemmT is internal/gemm's Sgemm or Dgemm, by element type; row-major.
func gemmT[T Float](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	var z T
	if _, ok := any(z).(float32); ok {
		gemm.Sgemm(tA, tB, m, n, k, float32(alpha), as[float32](a), lda, as[float32](b), ldb, float32(beta), as[float32](c), ldc)
		return
	}
	gemm.Dgemm(tA, tB, m, n, k, float64(alpha), as[float64](a), lda, as[float64](b), ldb, float64(beta), as[float64](c), ldc)
}

// as reinterprets a []T as []U where T and U are the same type (checked by
// the caller); it avoids boxing slices in interfaces on the hot path.
func as[U, T Float](s []T) []U {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*U)(unsafe.Pointer(&s[0])), len(s))
}

// workers is how many goroutines the heavy ops split a batch into.
func workers(n int) int {
	w := runtime.GOMAXPROCS(0)
	if w > n {
		w = n
	}
	if w < 1 {
		w = 1
	}
	return w
}

// parallel runs fn(w, lo, hi) over w contiguous parts of [0, n), the first in
// the calling goroutine; it returns when all parts are done. The split depends
// only on n and w, so results are reproducible.
func parallel(n, w int, fn func(w, lo, hi int)) {
	if w <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < w; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			fn(i, i*n/w, (i+1)*n/w)
		}(i)
	}
	fn(0, 0, n/w)
	wg.Wait()
}
