// Package data owns the training data: the built-in 2-D toys and synthetic
// images, readers for MNIST-style IDX files and CIFAR-10 binary batches, and
// the global-batch sampler that fixes every step's examples from the seed
// alone, whatever the number of workers.
package data

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Dataset names accepted in data.name.
const (
	NameGMM          = "gmm"
	NameRings        = "rings"
	NameMoons        = "moons"
	NameCheckerboard = "checkerboard"
	NameSynthetic    = "synthetic"
	NameMNIST        = "mnist"
	NameFashionMNIST = "fashion-mnist"
	NameCIFAR10      = "cifar10"
)

// Names lists every dataset Open knows, in the order error messages show them.
var Names = []string{
	NameGMM, NameRings, NameMoons, NameCheckerboard,
	NameSynthetic, NameMNIST, NameFashionMNIST, NameCIFAR10,
}

// Defaults filled in by WithDefaults.
const (
	DefaultTrainSize = 60000 // generated sets only; file sets default to all examples
	DefaultTestSize  = 10000
	DefaultImageSize = 28
	DefaultChannels  = 1
	// DefaultFashionMNISTPath is where Debian's dataset-fashion-mnist installs the files.
	DefaultFashionMNISTPath = "/usr/share/datasets/fashion-mnist"
)

// Default toy noise: gmm's std is the paper's unit variance; the ring and
// moon widths are small against their radii so their shape stays visible.
const (
	defaultGMMStd   = 1.0
	defaultRingStd  = 0.1
	defaultMoonsStd = 0.1
)

// Config is the `data:` section of the run config. A zero field means the
// default documented on WithDefaults.
type Config struct {
	// Name selects the dataset, one of Names. Required.
	Name string `yaml:"name" json:"name"`
	// Path is the folder holding the files of mnist, fashion-mnist and cifar10.
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// Means, Weights and Std define gmm: Σ_k Weights[k]·N(Means[k], Std²·I).
	// All means have the same dimension; the weights sum to 1.
	Means   [][]float64 `yaml:"means,omitempty" json:"means,omitempty"`
	Weights []float64   `yaml:"weights,omitempty" json:"weights,omitempty"`
	// Std is gmm's component standard deviation, or the noise width of rings and moons.
	Std float64 `yaml:"std,omitempty" json:"std,omitempty"`
	// Dequantize asks the sampler to spread each 8-bit pixel uniformly over
	// its bin (x·255/256 + u/256). Image sets only. The YAML key is always
	// written: its default differs by dataset, so an omitted false would load as true.
	Dequantize bool `yaml:"dequantize" json:"dequantize,omitempty"`
	// Flip mirrors each training example left to right with probability ½,
	// keyed by (seed, step, position) like dequantization. Image sets only.
	Flip bool `yaml:"flip" json:"flip,omitempty"`
	// Centered trains on [−1, 1] (2x − 1) instead of [0, 1]; samples are
	// mapped back to [0, 1]. Image sets only.
	Centered bool `yaml:"centered,omitempty" json:"centered,omitempty"`
	// TrainSize and TestSize are the example counts of generated sets; for
	// file sets they keep only the first N examples (0 = all of them).
	TrainSize int `yaml:"train_size,omitempty" json:"train_size,omitempty"`
	TestSize  int `yaml:"test_size,omitempty" json:"test_size,omitempty"`
	// ImageSize (height = width) and Channels (1 or 3) shape synthetic images.
	ImageSize int `yaml:"image_size,omitempty" json:"image_size,omitempty"`
	Channels  int `yaml:"channels,omitempty" json:"channels,omitempty"`
}

// The bounds Validate enforces on synthetic images: smaller than 8 pixels
// leaves no room for a shape, larger than 256 is not what a built-in set is for.
const (
	minImageSize = 8
	maxImageSize = 256
	// maxGenerated bounds train_size and test_size of generated sets so that
	// per-epoch permutations stay a sane size.
	maxGenerated = 1 << 26
)

func isToy(name string) bool {
	switch name {
	case NameGMM, NameRings, NameMoons, NameCheckerboard:
		return true
	}
	return false
}

func isFileSet(name string) bool {
	switch name {
	case NameMNIST, NameFashionMNIST, NameCIFAR10:
		return true
	}
	return false
}

// WithDefaults returns a copy of c with zero values replaced by defaults:
//   - gmm: means [[-5,-5],[5,5]], weights [0.2,0.8], std 1 (the paper's toy);
//     rings and moons: std 0.1;
//   - generated sets (toys, synthetic): train_size 60000, test_size 10000;
//   - synthetic: image_size 28, channels 1;
//   - fashion-mnist: path /usr/share/datasets/fashion-mnist.
//
// Keys a dataset does not use are left alone, so Validate can reject them.
func (c Config) WithDefaults() Config {
	switch c.Name {
	case NameGMM:
		// Each key keeps its default unless set: new weights for the default means, or
		// new means with equal weights.
		defMeans := [][]float64{{-5, -5}, {5, 5}}
		if len(c.Means) == 0 && (len(c.Weights) == 0 || len(c.Weights) == len(defMeans)) {
			c.Means = defMeans
			if len(c.Weights) == 0 {
				c.Weights = []float64{0.2, 0.8}
			}
		}
		if len(c.Weights) == 0 && len(c.Means) > 0 {
			c.Weights = slices.Repeat([]float64{1 / float64(len(c.Means))}, len(c.Means))
		}
		if c.Std == 0 {
			c.Std = defaultGMMStd
		}
	case NameRings:
		if c.Std == 0 {
			c.Std = defaultRingStd
		}
	case NameMoons:
		if c.Std == 0 {
			c.Std = defaultMoonsStd
		}
	case NameSynthetic:
		if c.ImageSize == 0 {
			c.ImageSize = DefaultImageSize
		}
		if c.Channels == 0 {
			c.Channels = DefaultChannels
		}
	case NameFashionMNIST:
		if c.Path == "" {
			c.Path = DefaultFashionMNISTPath
		}
	}
	if isToy(c.Name) || c.Name == NameSynthetic {
		if c.TrainSize == 0 {
			c.TrainSize = DefaultTrainSize
		}
		if c.TestSize == 0 {
			c.TestSize = DefaultTestSize
		}
	}
	return c
}

// Validate checks c after filling defaults. Its messages name the key
// (data.<key>) and say what is wrong; keys the chosen dataset does not use
// are rejected rather than silently ignored.
func (c Config) Validate() error {
	c = c.WithDefaults()
	if c.Name == "" {
		return fmt.Errorf("data.name: missing (known: %s)", strings.Join(Names, ", "))
	}
	if !slices.Contains(Names, c.Name) {
		return fmt.Errorf("data.name: unknown dataset %q (known: %s)", c.Name, strings.Join(Names, ", "))
	}
	unused := func(key, usedBy string) error {
		return fmt.Errorf("data.%s: not used by %s (only by %s)", key, c.Name, usedBy)
	}
	if c.Name != NameGMM {
		if len(c.Means) > 0 {
			return unused("means", NameGMM)
		}
		if len(c.Weights) > 0 {
			return unused("weights", NameGMM)
		}
	}
	if c.Std != 0 && c.Name != NameGMM && c.Name != NameRings && c.Name != NameMoons {
		return unused("std", "gmm, rings, moons")
	}
	if c.Path != "" && !isFileSet(c.Name) {
		return unused("path", "mnist, fashion-mnist, cifar10")
	}
	if c.Dequantize && isToy(c.Name) {
		return unused("dequantize", "image datasets")
	}
	if c.Flip && isToy(c.Name) {
		return unused("flip", "image datasets")
	}
	if c.Centered && isToy(c.Name) {
		return unused("centered", "image datasets")
	}
	if c.Name != NameSynthetic {
		if c.ImageSize != 0 {
			return unused("image_size", NameSynthetic)
		}
		if c.Channels != 0 {
			return unused("channels", NameSynthetic)
		}
	}
	if c.TrainSize < 0 {
		return fmt.Errorf("data.train_size: %d is negative", c.TrainSize)
	}
	if c.TestSize < 0 {
		return fmt.Errorf("data.test_size: %d is negative", c.TestSize)
	}
	if !isFileSet(c.Name) {
		if c.TrainSize > maxGenerated {
			return fmt.Errorf("data.train_size: %d exceeds %d", c.TrainSize, maxGenerated)
		}
		if c.TestSize > maxGenerated {
			return fmt.Errorf("data.test_size: %d exceeds %d", c.TestSize, maxGenerated)
		}
	}
	if c.Std < 0 || math.IsNaN(c.Std) || math.IsInf(c.Std, 0) {
		return fmt.Errorf("data.std: %v, want a finite positive number", c.Std)
	}
	switch c.Name {
	case NameGMM:
		return validateGMM(c.Means, c.Weights)
	case NameSynthetic:
		if c.ImageSize < minImageSize || c.ImageSize > maxImageSize {
			return fmt.Errorf("data.image_size: %d, want %d..%d", c.ImageSize, minImageSize, maxImageSize)
		}
		if c.Channels != 1 && c.Channels != 3 {
			return fmt.Errorf("data.channels: %d, want 1 or 3", c.Channels)
		}
	case NameMNIST, NameCIFAR10:
		if c.Path == "" {
			return fmt.Errorf("data.path: required for %s; %s", c.Name, howToGet(c.Name))
		}
	}
	return nil
}

// weightTol is how far the gmm weights may sum from 1: YAML decimals such as
// 0.1+0.2+0.7 do not sum to exactly 1 in binary.
const weightTol = 1e-6

func validateGMM(means [][]float64, weights []float64) error {
	if len(means) == 0 {
		return fmt.Errorf("data.means: empty, want at least one mean")
	}
	dim := len(means[0])
	if dim == 0 {
		return fmt.Errorf("data.means[0]: empty, want a point such as [0, 0]")
	}
	for k, m := range means {
		if len(m) != dim {
			return fmt.Errorf("data.means[%d]: %d coordinates, but data.means[0] has %d", k, len(m), dim)
		}
		for _, v := range m {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("data.means[%d]: %v is not finite", k, m)
			}
		}
	}
	if len(weights) != len(means) {
		return fmt.Errorf("data.weights: %d weights for %d means; set data.means and data.weights together", len(weights), len(means))
	}
	var sum float64
	for k, w := range weights {
		if !(w >= 0) || math.IsInf(w, 0) {
			return fmt.Errorf("data.weights[%d]: %v, want a finite number >= 0", k, w)
		}
		sum += w
	}
	if math.Abs(sum-1) > weightTol {
		return fmt.Errorf("data.weights: sum to %.6g, want 1", sum)
	}
	return nil
}

// howToGet tells a user where the files of a file-backed dataset come from.
func howToGet(name string) string {
	switch name {
	case NameFashionMNIST:
		return "install it with `apt-get install dataset-fashion-mnist` (files go to " +
			DefaultFashionMNISTPath + ") or download the four *-ubyte.gz files from " +
			"https://github.com/zalandoresearch/fashion-mnist into data.path"
	case NameMNIST:
		return "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, " +
			"t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from " +
			"https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of yann.lecun.com/exdb/mnist) into data.path"
	case NameCIFAR10:
		return "download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and extract it " +
			"into data.path (data_batch_1.bin … data_batch_5.bin, test_batch.bin)"
	}
	return ""
}
