package samples

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ncsn/ncsn/internal/config"
	"github.com/ncsn/ncsn/internal/safetensors"
	"github.com/ncsn/ncsn/model"
)

// Open loads a checkpoint file, or the newest checkpoint in a folder that
// verifies (a run's --out folder or its checkpoints/ subfolder), with the run
// config stored in it.
func Open(path string) (config.Config, *model.Checkpoint, string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return config.Config{}, nil, "", fmt.Errorf("samples: %w", err)
	}
	if !st.IsDir() {
		rc, c, err := openFile(path)
		return rc, c, path, err
	}
	if sub := filepath.Join(path, "checkpoints"); isDir(sub) {
		path = sub
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return config.Config{}, nil, "", fmt.Errorf("samples: %w", err)
	}
	type cand struct {
		step int64
		name string
	}
	var cs []cand
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), "ckpt-")
		if s, ok2 := strings.CutSuffix(s, ".safetensors"); ok && ok2 {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				cs = append(cs, cand{n, e.Name()})
			}
		}
	}
	slices.SortFunc(cs, func(a, b cand) int { return int(b.step - a.step) })
	var errs []error
	for _, c := range cs {
		p := filepath.Join(path, c.name)
		rc, ck, err := openFile(p)
		if err == nil {
			return rc, ck, p, nil
		}
		errs = append(errs, err)
	}
	if len(cs) == 0 {
		return config.Config{}, nil, "", fmt.Errorf("samples: no checkpoints (ckpt-<step>.safetensors) in %s", path)
	}
	return config.Config{}, nil, "", fmt.Errorf("samples: no checkpoint in %s loads: %w", path, errors.Join(errs...))
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func openFile(path string) (config.Config, *model.Checkpoint, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return config.Config{}, nil, fmt.Errorf("samples: %w", err)
	}
	rc, err := config.FromJSON([]byte(f.Metadata[model.MetaConfig]))
	if err != nil {
		return config.Config{}, nil, fmt.Errorf("samples: %s: %w", path, err)
	}
	net, err := model.New(rc.Model, rc.Shape())
	if err != nil {
		return config.Config{}, nil, fmt.Errorf("samples: %s: %w", path, err)
	}
	c, err := model.ReadCheckpoint(path, net.Params())
	if err != nil {
		return config.Config{}, nil, err
	}
	return rc, c, nil
}

// Loaded is an opened checkpoint with the parameters chosen for use.
type Loaded struct {
	Config     config.Config
	Checkpoint *model.Checkpoint
	Path       string
	Params     []float32
}
