package data

import (
	"fmt"

	"github.com/ncsn/ncsn/internal/keyrand"
)

// Labeled is a Dataset whose examples have classes 0 … Classes−1: what the
// evaluation's feature classifier is trained on.
type Labeled interface {
	Dataset
	Label(i int) int
	Classes() int
}

// Classes is 10 for the file sets (MNIST, Fashion-MNIST and CIFAR-10 all
// have ten).
func (m *Images) Classes() int { return 10 }

// Label is the shape of synthetic image i: 0 disc, 1 square, 2 bar.
func (s *Synthetic) Label(i int) int {
	if i < 0 || i >= s.n {
		panic(fmt.Sprintf("data: synthetic example %d out of range [0, %d)", i, s.n))
	}
	// The shape is the first draw of the example's stream (see Example).
	var r keyrand.Stream
	r.Reset(s.seed, tagExample, uint64(s.split), uint64(i))
	return r.IntN(numShapes)
}

// Classes is the number of shapes.
func (s *Synthetic) Classes() int { return numShapes }
