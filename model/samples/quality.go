package samples

import (
	"context"
	"fmt"
	"math"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/keyrand"
	"github.com/ncsn/ncsn/internal/metric"
	"github.com/ncsn/ncsn/internal/plot"
)

// floorTag keys the choice of the training examples that make the floor.
const floorTag = 0x666c6f6f72 // "floor"

// Defaults of ReferenceOptions.
const (
	DefaultNeighbours = 8
	// nnMax bounds how many samples (and held-out images) the nearest-neighbour
	// check searches the training split for: its cost grows with both.
	nnMax = 1000
	// nnShown is how many nearest training images the neighbour image shows per sample.
	nnShown = 3
	// nnChunk is how many training images are held as float32 at once.
	nnChunk = 2048
)

// ReferenceOptions configures a Reference.
type ReferenceOptions struct {
	Features FeatureOptions
	// Seed keys KID's subsets and the training examples of the floor.
	Seed uint64
	KID  metric.KIDOptions
	// Neighbours is how many samples the nearest-neighbour image shows (default 8).
	Neighbours int
}

// Reference is the real data that sample sets are scored against: the test
// split, with, for images, the feature network and the test split's features.
// It is built once and scores any number of sample sets of its shape.
type Reference struct {
	name        string
	shape       []int
	dim         int
	train, test data.Dataset
	o           ReferenceOptions
	// images
	feat      *Features
	testFeat  []float32
	testStats metric.Gaussian
	// 2-D points
	testPts []float32
	within  float64
	// per sample count: the floor, and the held-out images' nearest-neighbour distance
	floors map[int]*Quality
	heldNN map[int]float64
}

// NewReference opens the data set dc (generated sets drawn from seed) and
// prepares to score samples against its test split. For images it loads or
// trains the feature network (see LoadFeatures), which comes with the test
// split's features.
func NewReference(ctx context.Context, dc data.Config, seed uint64, o ReferenceOptions) (*Reference, error) {
	train, test, err := data.Open(dc, seed)
	if err != nil {
		return nil, err
	}
	if test == nil {
		return nil, fmt.Errorf("samples: %s has no test split in %s: samples are scored against it", dc.Name, dc.Path)
	}
	if o.Neighbours <= 0 {
		o.Neighbours = DefaultNeighbours
	}
	r := &Reference{name: dc.Name, shape: test.Shape(), dim: data.Size(test), train: train, test: test, o: o,
		floors: map[int]*Quality{}, heldNN: map[int]float64{}}
	if len(r.shape) == 1 {
		r.testPts = examples(test, test.Len())
		r.within = metric.WithinDistance(r.testPts, r.dim)
		return r, nil
	}
	if r.feat, err = LoadFeatures(ctx, dc.Name, train, test, o.Features); err != nil {
		return nil, err
	}
	r.testFeat = r.feat.TestFeatures
	if r.testStats, err = metric.Fit(r.testFeat, r.feat.Net.FeatureDim()); err != nil {
		r.feat.Close()
		return nil, err
	}
	return r, nil
}

// FullData is the data set dc names with its whole splits and raw pixels:
// samples are scored against the same data (and feature network) whatever
// train_size, test_size or dequantization a run used, so that scores compare
// across runs.
func FullData(dc data.Config) data.Config {
	dc.TrainSize, dc.TestSize, dc.Dequantize = 0, 0, false
	return dc
}

// Close releases the feature network.
func (r *Reference) Close() error {
	if r.feat == nil {
		return nil
	}
	return r.feat.Close()
}

// Shape is the per-example shape of the data.
func (r *Reference) Shape() []int { return append([]int(nil), r.shape...) }

// examples copies the first n examples of ds.
func examples(ds data.Dataset, n int) []float32 {
	d := data.Size(ds)
	x := make([]float32, n*d)
	for i := 0; i < n; i++ {
		ds.Example(i, x[i*d:(i+1)*d])
	}
	return x
}

// Quality is how close a set of samples is to the data.
type Quality struct {
	// N is the number of samples scored.
	N int `json:"n"`
	// Reference is the number of test examples they were scored against.
	Reference int           `json:"reference"`
	Images    *ImageQuality `json:"images,omitempty"`
	Points    *PointQuality `json:"points,omitempty"`
}

// ImageQuality holds the scores of images. The floor is the same score of N
// real training images: what a perfect model would get with N samples.
type ImageQuality struct {
	// FID and KID are computed in the feature space of ncsn's own classifier,
	// so they compare only with other FIDs and KIDs of ncsn, not with
	// published (Inception) figures.
	FID         float64 `json:"fid"`
	KID         float64 `json:"kid"`
	KIDStd      float64 `json:"kid_std"`
	FloorFID    float64 `json:"floor_fid"`
	FloorKID    float64 `json:"floor_kid"`
	FloorKIDStd float64 `json:"floor_kid_std"`
	// Classifier is the feature network's cache file, ClassifierAccuracy its test accuracy.
	Classifier         string  `json:"classifier"`
	ClassifierAccuracy float64 `json:"classifier_accuracy"`
	// NNCount samples, and as many held-out real images, were each matched to
	// their nearest training image by L2 (pixels in [0, 1]): a model that
	// memorises its training set has NNDistance well below NNDistanceReal.
	NNCount        int     `json:"nn_count"`
	NNDistance     float64 `json:"nn_distance"`
	NNDistanceReal float64 `json:"nn_distance_real"`
	// NNImage is the PNG of samples beside their nearest training images, if written.
	NNImage string `json:"nn_image,omitempty"`
}

// PointQuality holds the scores of 2-D points.
type PointQuality struct {
	// Energy is the energy distance to the test split; FloorEnergy the same for
	// N training points (a true sample).
	Energy      float64 `json:"energy_distance"`
	FloorEnergy float64 `json:"floor_energy_distance"`
}

// Score measures the samples x (n×D, D the data's example size) against the
// test split. For images it writes the nearest-neighbour PNG to nnImage
// unless that is "".
func (r *Reference) Score(ctx context.Context, x []float32, nnImage string) (*Quality, error) {
	if len(x) == 0 || len(x)%r.dim != 0 {
		return nil, fmt.Errorf("samples: %d values are not %v samples of %s", len(x), r.shape, r.name)
	}
	n := len(x) / r.dim
	if n < 2 {
		return nil, fmt.Errorf("samples: 1 sample: scoring needs at least 2")
	}
	q := &Quality{N: n, Reference: r.test.Len()}
	if r.feat == nil {
		for _, v := range x {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("samples: the samples hold non-finite values: the sampler diverged (try a smaller sample.eps)")
			}
		}
		e, err := metric.Energy(x, r.testPts, r.dim, r.within)
		if err != nil {
			return nil, err
		}
		fl, err := r.floor(ctx, n)
		if err != nil {
			return nil, err
		}
		q.Points = &PointQuality{Energy: e, FloorEnergy: fl.Points.Energy}
		return q, nil
	}
	iq, err := r.imageScores(ctx, n, func(i int, dst []float32) { copy(dst, x[i*r.dim:(i+1)*r.dim]) })
	if err != nil {
		return nil, err
	}
	fl, err := r.floor(ctx, n)
	if err != nil {
		return nil, err
	}
	iq.FloorFID, iq.FloorKID, iq.FloorKIDStd = fl.Images.FID, fl.Images.KID, fl.Images.KIDStd
	if err := r.neighbours(ctx, x, iq, nnImage); err != nil {
		return nil, err
	}
	q.Images = iq
	return q, nil
}

// imageScores is FID and KID of the n images get writes.
func (r *Reference) imageScores(ctx context.Context, n int, get func(i int, dst []float32)) (*ImageQuality, error) {
	feat, _, err := r.feat.extract(ctx, n, get, false)
	if err != nil {
		return nil, err
	}
	d := r.feat.Net.FeatureDim()
	g, err := metric.Fit(feat, d)
	if err != nil {
		return nil, err
	}
	fid, err := metric.Frechet(g, r.testStats)
	if err != nil {
		return nil, err
	}
	kid, std, err := metric.KID(feat, r.testFeat, d, metric.KIDOptions{Subsets: r.o.KID.Subsets, SubsetSize: r.o.KID.SubsetSize, Seed: r.o.Seed})
	if err != nil {
		return nil, err
	}
	return &ImageQuality{FID: fid, KID: kid, KIDStd: std, Classifier: r.feat.Path, ClassifierAccuracy: r.feat.Accuracy}, nil
}

// floor scores n training examples (a keyed choice, or all of them if there
// are fewer) the way samples are scored. It is computed once per n.
func (r *Reference) floor(ctx context.Context, n int) (*Quality, error) {
	if q, ok := r.floors[n]; ok {
		return q, nil
	}
	idx := make([]int, r.train.Len())
	keyrand.New(r.o.Seed, floorTag).Perm(idx)
	idx = idx[:min(n, len(idx))]
	get := func(i int, dst []float32) { r.train.Example(idx[i], dst) }
	q := &Quality{N: len(idx), Reference: r.test.Len()}
	if r.feat == nil {
		x := make([]float32, len(idx)*r.dim)
		for i := range idx {
			get(i, x[i*r.dim:(i+1)*r.dim])
		}
		e, err := metric.Energy(x, r.testPts, r.dim, r.within)
		if err != nil {
			return nil, err
		}
		q.Points = &PointQuality{Energy: e}
	} else {
		iq, err := r.imageScores(ctx, len(idx), get)
		if err != nil {
			return nil, err
		}
		q.Images = iq
	}
	r.floors[n] = q
	return q, nil
}

// neighbours matches the first min(n, 1000) samples, and as many held-out
// images, to their nearest training images, and draws the first few samples
// beside theirs.
func (r *Reference) neighbours(ctx context.Context, x []float32, iq *ImageQuality, path string) error {
	cnt := min(len(x)/r.dim, nnMax, r.test.Len())
	queries := make([]float32, 0, 2*cnt*r.dim)
	for _, v := range x[:cnt*r.dim] {
		queries = append(queries, clamp01(v))
	}
	held, known := r.heldNN[cnt]
	if !known {
		queries = append(queries, examples(r.test, cnt)...)
	}
	nn, err := metric.NewNearest(queries, r.dim, nnShown)
	if err != nil {
		return err
	}
	buf := make([]float32, nnChunk*r.dim)
	for lo := 0; lo < r.train.Len(); lo += nnChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := min(nnChunk, r.train.Len()-lo)
		for i := 0; i < m; i++ {
			r.train.Example(lo+i, buf[i*r.dim:(i+1)*r.dim])
		}
		if err := nn.Add(buf[:m*r.dim], lo); err != nil {
			return err
		}
	}
	var sum float64
	for i := 0; i < cnt; i++ {
		_, d := nn.Neighbours(i)
		sum += d[0]
	}
	if !known {
		var h float64
		for i := cnt; i < 2*cnt; i++ {
			_, d := nn.Neighbours(i)
			h += d[0]
		}
		held = h / float64(cnt)
		r.heldNN[cnt] = held
	}
	iq.NNCount, iq.NNDistance, iq.NNDistanceReal = cnt, sum/float64(cnt), held
	if path == "" {
		return nil
	}
	// One row per sample: the sample, then its nearest training images.
	k := min(r.o.Neighbours, cnt)
	grid := make([]float32, 0, k*(1+nnShown)*r.dim)
	img := make([]float32, r.dim)
	for i := 0; i < k; i++ {
		grid = append(grid, queries[i*r.dim:(i+1)*r.dim]...)
		idx, _ := nn.Neighbours(i)
		for _, j := range idx {
			r.train.Example(j, img)
			grid = append(grid, img...)
		}
		for range nnShown - len(idx) {
			grid = append(grid, make([]float32, r.dim)...)
		}
	}
	c, h, w := r.shape[0], r.shape[1], r.shape[2]
	g, err := plot.Grid(grid, k*(1+nnShown), c, h, w, 1+nnShown, max(2, 64/max(h, w)))
	if err != nil {
		return err
	}
	if err := plot.WritePNG(path, g); err != nil {
		return err
	}
	iq.NNImage = path
	return nil
}

// clamp01 is v clamped to [0, 1], NaN taken as 0: the pixel a PNG would show.
func clamp01(v float32) float32 {
	switch {
	case !(v > 0):
		return 0
	case v > 1:
		return 1
	}
	return v
}
