package data

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" means valid
	}{
		{"gmm defaults", Config{Name: "gmm"}, ""},
		{"gmm explicit", Config{Name: "gmm", Means: [][]float64{{0}, {1}, {2}}, Weights: []float64{0.1, 0.2, 0.7}, Std: 0.5}, ""},
		{"rings", Config{Name: "rings", Std: 0.2, TrainSize: 100}, ""},
		{"moons", Config{Name: "moons"}, ""},
		{"checkerboard", Config{Name: "checkerboard"}, ""},
		{"synthetic", Config{Name: "synthetic", Dequantize: true}, ""},
		{"synthetic rgb", Config{Name: "synthetic", ImageSize: 32, Channels: 3}, ""},
		{"fashion default path", Config{Name: "fashion-mnist"}, ""},
		{"mnist with path", Config{Name: "mnist", Path: "/x", TrainSize: 10}, ""},
		{"cifar with path", Config{Name: "cifar10", Path: "/x", Dequantize: true}, ""},
		{"cifar flipped and centred", Config{Name: "cifar10", Path: "/x", Flip: true, Centered: true}, ""},
		{"flip on toy", Config{Name: "gmm", Flip: true}, "data.flip: not used by gmm (only by image datasets)"},
		{"centered on toy", Config{Name: "rings", Centered: true}, "data.centered: not used by rings"},

		{"missing name", Config{}, "data.name: missing (known: gmm, rings"},
		{"unknown name", Config{Name: "imagenet"}, `data.name: unknown dataset "imagenet" (known: gmm, rings, moons, checkerboard, synthetic, mnist, fashion-mnist, cifar10)`},
		{"weights sum", Config{Name: "gmm", Means: [][]float64{{0, 0}, {1, 1}}, Weights: []float64{0.2, 0.7}}, "data.weights: sum to 0.9, want 1"},
		{"weights count", Config{Name: "gmm", Means: [][]float64{{0, 0}, {1, 1}}, Weights: []float64{1}}, "data.weights: 1 weights for 2 means"},
		{"negative weight", Config{Name: "gmm", Means: [][]float64{{0}, {1}}, Weights: []float64{-0.5, 1.5}}, "data.weights[0]: -0.5"},
		{"ragged means", Config{Name: "gmm", Means: [][]float64{{0, 0}, {1}}, Weights: []float64{0.5, 0.5}}, "data.means[1]: 1 coordinates, but data.means[0] has 2"},
		{"empty mean", Config{Name: "gmm", Means: [][]float64{{}}, Weights: []float64{1}}, "data.means[0]: empty"},
		{"weights without means", Config{Name: "gmm", Weights: []float64{1}}, "data.means: empty"},
		{"negative std", Config{Name: "gmm", Std: -1}, "data.std: -1"},
		{"means on rings", Config{Name: "rings", Means: [][]float64{{0, 0}}}, "data.means: not used by rings (only by gmm)"},
		{"std on checkerboard", Config{Name: "checkerboard", Std: 1}, "data.std: not used by checkerboard"},
		{"std on synthetic", Config{Name: "synthetic", Std: 1}, "data.std: not used by synthetic"},
		{"path on gmm", Config{Name: "gmm", Path: "/x"}, "data.path: not used by gmm"},
		{"dequantize on toy", Config{Name: "moons", Dequantize: true}, "data.dequantize: not used by moons"},
		{"image_size on mnist", Config{Name: "mnist", Path: "/x", ImageSize: 28}, "data.image_size: not used by mnist"},
		{"channels on gmm", Config{Name: "gmm", Channels: 3}, "data.channels: not used by gmm"},
		{"bad channels", Config{Name: "synthetic", Channels: 2}, "data.channels: 2, want 1 or 3"},
		{"tiny image", Config{Name: "synthetic", ImageSize: 4}, "data.image_size: 4, want 8..256"},
		{"negative train size", Config{Name: "synthetic", TrainSize: -1}, "data.train_size: -1 is negative"},
		{"negative test size", Config{Name: "mnist", Path: "/x", TestSize: -2}, "data.test_size: -2 is negative"},
		{"huge generated", Config{Name: "gmm", TrainSize: 1 << 30}, "data.train_size: 1073741824 exceeds"},
		{"mnist without path", Config{Name: "mnist"}, "data.path: required for mnist; download"},
		{"cifar without path", Config{Name: "cifar10"}, "data.path: required for cifar10; download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate() = nil, want error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Validate() = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	tests := []struct {
		in, want Config
	}{
		{Config{Name: "gmm"}, Config{Name: "gmm", Means: [][]float64{{-5, -5}, {5, 5}}, Weights: []float64{0.2, 0.8}, Std: 1, TrainSize: 60000, TestSize: 10000}},
		{Config{Name: "gmm", Std: 2, TrainSize: 5}, Config{Name: "gmm", Means: [][]float64{{-5, -5}, {5, 5}}, Weights: []float64{0.2, 0.8}, Std: 2, TrainSize: 5, TestSize: 10000}},
		// One key set keeps the other's default.
		{Config{Name: "gmm", Weights: []float64{0.5, 0.5}}, Config{Name: "gmm", Means: [][]float64{{-5, -5}, {5, 5}}, Weights: []float64{0.5, 0.5}, Std: 1, TrainSize: 60000, TestSize: 10000}},
		{Config{Name: "gmm", Means: [][]float64{{0, 0}, {1, 1}, {2, 2}, {3, 3}}}, Config{Name: "gmm", Means: [][]float64{{0, 0}, {1, 1}, {2, 2}, {3, 3}}, Weights: []float64{0.25, 0.25, 0.25, 0.25}, Std: 1, TrainSize: 60000, TestSize: 10000}},
		// Three weights do not fit the two default means: left for validation to refuse.
		{Config{Name: "gmm", Weights: []float64{1, 1, 1}}, Config{Name: "gmm", Weights: []float64{1, 1, 1}, Std: 1, TrainSize: 60000, TestSize: 10000}},
		{Config{Name: "rings"}, Config{Name: "rings", Std: 0.1, TrainSize: 60000, TestSize: 10000}},
		{Config{Name: "checkerboard"}, Config{Name: "checkerboard", TrainSize: 60000, TestSize: 10000}},
		{Config{Name: "synthetic", Channels: 3}, Config{Name: "synthetic", ImageSize: 28, Channels: 3, TrainSize: 60000, TestSize: 10000}},
		{Config{Name: "fashion-mnist"}, Config{Name: "fashion-mnist", Path: "/usr/share/datasets/fashion-mnist"}},
		{Config{Name: "mnist", Path: "/m"}, Config{Name: "mnist", Path: "/m"}},
		{Config{Name: "cifar10", Path: "/c", TrainSize: 7}, Config{Name: "cifar10", Path: "/c", TrainSize: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.in.Name, func(t *testing.T) {
			got := tt.in.WithDefaults()
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("WithDefaults(%+v) = %+v, want %+v", tt.in, got, tt.want)
			}
			if again := got.WithDefaults(); !reflect.DeepEqual(again, got) {
				t.Fatalf("WithDefaults is not idempotent: %+v then %+v", got, again)
			}
		})
	}
}

// TestConfigJSON checks the lower_snake names the run config is stored under
// in checkpoint metadata, and that defaults (zeros) are omitted.
func TestConfigJSON(t *testing.T) {
	b, err := json.Marshal(Config{Name: "synthetic", ImageSize: 32, Channels: 3, TrainSize: 10, Dequantize: true})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"name":"synthetic","dequantize":true,"train_size":10,"image_size":32,"channels":3}`
	if string(b) != want {
		t.Fatalf("json = %s, want %s", b, want)
	}
	st := reflect.TypeFor[Config]()
	for i := range st.NumField() {
		f := st.Field(i)
		// The names must agree; YAML keeps the bools whose default depends on
		// the dataset (dequantize, flip) even when false.
		y, j := f.Tag.Get("yaml"), f.Tag.Get("json")
		yn, _, _ := strings.Cut(y, ",")
		jn, _, _ := strings.Cut(j, ",")
		if yn == "" || yn != jn {
			t.Errorf("field %s: yaml tag %q, json tag %q, want the same non-empty name", f.Name, y, j)
		}
	}
}
