package samples

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ncsn/ncsn/internal/data"
	"github.com/ncsn/ncsn/internal/imageset"
	"github.com/ncsn/ncsn/internal/keyrand"
	"github.com/ncsn/ncsn/internal/npy"
	"github.com/ncsn/ncsn/internal/plot"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
)

// maskTag keys the random mask apart from the seed's other uses.
const maskTag = 0x6d61736b // "mask"

// imageShape is rc's [C, H, W], or an error saying inpainting needs images.
func imageShape(rc config.Config) ([]int, error) {
	shape := rc.Shape()
	if len(shape) != 3 {
		return nil, fmt.Errorf("samples: inpainting needs an image dataset; %s has points of shape %v", rc.Data.Name, shape)
	}
	return shape, nil
}

// LoadImages reads n images to inpaint as n×C×H×W values in [0, 1] of the
// run's image shape, from
//   - FILE.npy or a folder of PNGs, as imageset.Read reads them;
//   - FILE.png: one image of the dataset's size (or a whole multiple), or a
//     grid as `ncsn sample` and torch_ref.py write;
//   - test:I or test:I-J: images I … J (inclusive) of the held-out split.
func LoadImages(spec string, rc config.Config) ([]float32, int, error) {
	shape, err := imageShape(rc)
	if err != nil {
		return nil, 0, err
	}
	d := shape[0] * shape[1] * shape[2]
	if r, ok := strings.CutPrefix(spec, "test:"); ok {
		x, err := heldOut(r, rc)
		return x, len(x) / d, err
	}
	var x []float32
	st, statErr := os.Stat(spec)
	switch ext := strings.ToLower(filepath.Ext(spec)); {
	case ext == ".png":
		b, err := os.ReadFile(spec)
		if err != nil {
			return nil, 0, fmt.Errorf("samples: %w", err)
		}
		if x, err = imageset.DecodeImage(b, shape); err != nil {
			var gerr error
			if x, gerr = imageset.DecodeGrid(b, shape); gerr != nil {
				return nil, 0, fmt.Errorf("samples: %s is neither one %d×%d image of %s nor a grid of them: %v; %w", spec, shape[2], shape[1], rc.Data.Name, err, gerr)
			}
		}
	case ext == ".npy" || (statErr == nil && st.IsDir()):
		if x, err = imageset.Read(spec, shape); err != nil {
			return nil, 0, fmt.Errorf("samples: %w", err)
		}
	default:
		return nil, 0, fmt.Errorf("samples: inpaint %q: want FILE.npy, FILE.png, a folder of PNGs or test:I-J (held-out images I to J)", spec)
	}
	for i, v := range x {
		if !(v >= 0 && v <= 1) {
			return nil, 0, fmt.Errorf("samples: %s: value %v at index %d is outside [0, 1]; scale the images to [0, 1]", spec, v, i)
		}
	}
	return x, len(x) / d, nil
}

// heldOut reads images I … J of the held-out split, r being "I" or "I-J".
func heldOut(r string, rc config.Config) ([]float32, error) {
	lo, hi, ok := strings.Cut(r, "-")
	if !ok {
		hi = lo
	}
	i, err1 := strconv.Atoi(lo)
	j, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || i < 0 || j < i {
		return nil, fmt.Errorf("samples: inpaint test:%s: want test:I or test:I-J with 0 <= I <= J", r)
	}
	_, test, err := data.Open(rc.Data, rc.Run.Seed)
	if err != nil {
		return nil, fmt.Errorf("samples: inpaint test:%s: %w", r, err)
	}
	if test == nil {
		return nil, fmt.Errorf("samples: inpaint test:%s: %s has no held-out split in %s", r, rc.Data.Name, rc.Data.Path)
	}
	if j >= test.Len() {
		return nil, fmt.Errorf("samples: inpaint test:%s: the held-out split of %s has %d images (0 to %d)", r, rc.Data.Name, test.Len(), test.Len()-1)
	}
	d := data.Size(test)
	x := make([]float32, (j-i+1)*d)
	for k := i; k <= j; k++ {
		test.Example(k, x[(k-i)*d:(k-i+1)*d])
	}
	return x, nil
}

// Mask returns which values of n images of the run's shape are known, from
//   - half: the left half of the columns is known and the right half is
//     filled in, as in ermongroup/ncsn's anneal_Langevin_dynamics_inpainting
//     (which sets x[..., :16] of 32-pixel-wide images);
//   - quarter: all but the bottom-right quarter is known;
//   - random: each pixel (all its channels) is known with probability 1/2,
//     drawn per image from a stream keyed by (seed, image);
//   - FILE: a .png (luminance >= 128 known) or .npy (1 known, 0 unknown) of
//     H×W or C×H×W, the same for every image.
func Mask(spec string, rc config.Config, n int, seed uint64) ([]bool, error) {
	shape, err := imageShape(rc)
	if err != nil {
		return nil, err
	}
	c, h, w := shape[0], shape[1], shape[2]
	d := c * h * w
	known := make([]bool, n*d)
	var one []bool // one image's mask, broadcast over the n images
	switch spec {
	case "half", "quarter":
		one = make([]bool, d)
		for ch := 0; ch < c; ch++ {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					one[(ch*h+y)*w+x] = x < w/2 || (spec == "quarter" && y < h/2)
				}
			}
		}
	case "random":
		var r keyrand.Stream
		for i := 0; i < n; i++ {
			r.Reset(seed, maskTag, uint64(i))
			for p := 0; p < h*w; p++ {
				k := r.Uint64()&1 == 1
				for ch := 0; ch < c; ch++ {
					known[i*d+ch*h*w+p] = k
				}
			}
		}
		return known, nil
	default:
		if one, err = maskFile(spec, c, h, w); err != nil {
			return nil, err
		}
	}
	for i := 0; i < n; i++ {
		copy(known[i*d:(i+1)*d], one)
	}
	return known, nil
}

// maskFile reads a mask of H×W or C×H×W from a .png or .npy file.
func maskFile(path string, c, h, w int) ([]bool, error) {
	var (
		vals  []float32
		shape []int
	)
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png":
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("samples: mask: %w", err)
		}
		if vals, err = imageset.DecodeImage(b, []int{1, h, w}); err != nil {
			return nil, fmt.Errorf("samples: mask %s: %w", path, err)
		}
		shape = []int{h, w}
		for i, v := range vals {
			vals[i] = 0
			if v >= 0.5 {
				vals[i] = 1
			}
		}
	case ".npy":
		var err error
		if shape, vals, err = npy.ReadFile(path); err != nil {
			return nil, fmt.Errorf("samples: mask: %w", err)
		}
		for i, v := range vals {
			switch v {
			case 0:
			case 1, 1.0 / 255: // 1/255: a uint8 array of 0/1, which npy scales to [0, 1]
				vals[i] = 1
			default:
				return nil, fmt.Errorf("samples: mask %s: value %v at index %d; want 0 (unknown) or 1 (known)", path, v, i)
			}
		}
	default:
		return nil, fmt.Errorf("samples: mask %q: want half, quarter, random, FILE.png or FILE.npy", path)
	}
	d := c * h * w
	one := make([]bool, d)
	switch {
	case len(shape) == 2 && shape[0] == h && shape[1] == w:
		for i := range one {
			one[i] = vals[i%(h*w)] == 1
		}
	case len(shape) == 3 && shape[0] == c && shape[1] == h && shape[2] == w:
		for i := range one {
			one[i] = vals[i] == 1
		}
	default:
		return nil, fmt.Errorf("samples: mask %s has shape %v; want [%d %d] (H×W) or [%d %d %d] (C×H×W) of the dataset's images", path, shape, h, w, c, h, w)
	}
	for _, k := range one {
		if !k {
			return one, nil
		}
	}
	return nil, fmt.Errorf("samples: mask %s marks every pixel known: nothing to inpaint; mark the pixels to fill in with 0 (black)", path)
}

// Inpaint draws k completions of each of the images (n×D values in [0, 1]),
// whose known values known marks (n×D), with the annealed sampler and
// o's settings (o.N is set here). The result holds n·k samples ordered
// image by image: image 0's k completions, then image 1's, and so on.
func Inpaint(ctx context.Context, rc config.Config, params []float32, images []float32, known []bool, k int, o Options) ([]float32, error) {
	shape, err := imageShape(rc)
	if err != nil {
		return nil, err
	}
	d := shape[0] * shape[1] * shape[2]
	if k < 1 {
		return nil, fmt.Errorf("samples: %d completions per image, want >= 1", k)
	}
	if len(images) == 0 || len(images)%d != 0 || len(known) != len(images) {
		return nil, fmt.Errorf("samples: inpaint: %d values and %d mask values for images of %v", len(images), len(known), shape)
	}
	n := len(images) / d
	in := model.Inpainting{Known: make([]bool, n*k*d), Observed: make([]float32, n*k*d)}
	for i := 0; i < n; i++ {
		for j := 0; j < k; j++ {
			copy(in.Known[(i*k+j)*d:], known[i*d:(i+1)*d])
			copy(in.Observed[(i*k+j)*d:], images[i*d:(i+1)*d])
		}
	}
	// The sampler runs in the model's space (centred data: [−1, 1]).
	rc.Data.Centre(in.Observed)
	o.N, o.Inpaint = n*k, &in
	out, err := Draw(ctx, rc, params, o)
	if err != nil {
		return nil, err
	}
	// Draw maps back to [0, 1]; the known values are the inputs themselves,
	// bit for bit, whatever rounding the mapping does.
	for i := 0; i < n; i++ {
		for j := 0; j < k; j++ {
			c := out[(i*k+j)*d : (i*k+j+1)*d]
			for p, kn := range known[i*d : (i+1)*d] {
				if kn {
					c[p] = images[i*d+p]
				}
			}
		}
	}
	return out, nil
}

// WriteInpainting writes Inpaint's completions of images: FILE.npy and
// folders hold the completions alone, as Write writes samples; FILE.png is a
// grid with one row per image: the masked input (unknown pixels as a grey
// checkerboard), its k completions, the original.
func WriteInpainting(path string, rc config.Config, images []float32, known []bool, completions []float32, k int) error {
	shape, err := imageShape(rc)
	if err != nil {
		return err
	}
	if outKind(path) != outPNG {
		return Write(path, rc, completions)
	}
	c, h, w := shape[0], shape[1], shape[2]
	d := c * h * w
	n := len(images) / d
	if k < 1 || len(images) != n*d || len(known) != n*d || len(completions) != n*k*d {
		return fmt.Errorf("samples: write inpainting: %d images, %d mask values, %d completions values for %d per image of %v", len(images), len(known), len(completions), k, shape)
	}
	cells := make([]float32, 0, n*(k+2)*d)
	for i := 0; i < n; i++ {
		img := images[i*d : (i+1)*d]
		for j, v := range img {
			if !known[i*d+j] {
				// 2×2-pixel checks at 0.35 and 0.65 stand out from any image content.
				y, x := j/w%h, j%w
				v = 0.35 + 0.3*float32((y/2+x/2)%2)
			}
			cells = append(cells, v)
		}
		cells = append(cells, completions[i*k*d:(i+1)*k*d]...)
		cells = append(cells, img...)
	}
	g, err := plot.Grid(cells, n*(k+2), c, h, w, k+2, max(2, 64/max(h, w)))
	if err != nil {
		return err
	}
	return plot.WritePNG(path, g)
}
