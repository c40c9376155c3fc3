package samples

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ncsn/ncsn/internal/safetensors"
	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
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
	paths, err := (&model.CheckpointDir{Dir: path}).Newest()
	if err != nil {
		return config.Config{}, nil, "", fmt.Errorf("samples: %w", err)
	}
	var errs []error
	for _, p := range paths {
		rc, ck, err := openFile(p)
		if err == nil {
			return rc, ck, p, nil
		}
		errs = append(errs, err)
	}
	if len(paths) == 0 {
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
