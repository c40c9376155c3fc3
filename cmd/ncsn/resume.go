package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/ncsn/ncsn/model"
	"github.com/ncsn/ncsn/model/config"
	"github.com/ncsn/ncsn/model/samples"
)

// resumeHelp is the --resume flag's help.
const resumeHelp = "start this new run folder from a checkpoint FILE or run folder DIR (its newest that verifies): continue with more steps, or fine-tune with other free keys (lr, ema, ...); the model must be the same"

// startFrom makes a new run folder out begin at the checkpoint from: it writes the
// checkpoint's state as the first checkpoint of the run rc (with run.origin naming
// where it came from), which the run then resumes from. It refuses a folder that
// already holds checkpoints, and a model that differs.
func startFrom(from, out string, rc *config.Config, log interface{ Info(string, ...any) }) error {
	dir := filepath.Join(out, "checkpoints")
	if paths, err := (&model.CheckpointDir{Dir: dir}).Newest(); err == nil && len(paths) > 0 {
		return usageError{fmt.Errorf("--resume starts a new run, but %s already holds checkpoints: pick another --out, or drop --resume to go on with that run", dir)}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	old, ck, path, err := samples.Open(from)
	if err != nil {
		return fmt.Errorf("--resume: %w", err)
	}
	if !reflect.DeepEqual(old.Model, rc.Model) || !reflect.DeepEqual(old.Shape(), rc.Shape()) {
		return usageError{fmt.Errorf("--resume: %s holds model %+v of data shape %v; this run's is %+v of %v: set the same model keys", path, old.Model, old.Shape(), rc.Model, rc.Shape())}
	}
	if ck.Step >= rc.Run.Steps {
		return usageError{fmt.Errorf("--resume: the checkpoint is at step %d and run.steps is %d: set run.steps above it", ck.Step, rc.Run.Steps)}
	}
	rc.Run.Origin = fmt.Sprintf("%s@%d", path, ck.Step)
	if d := rc.Changes(old, true); len(d) > 0 {
		log.Info("resume: identity keys changed from the checkpoint's run", "changes", strings.Join(d, "; "))
	}
	if d := rc.Changes(old, false); len(d) > 0 {
		log.Info("resume: keys changed from the checkpoint's run", "changes", strings.Join(d, "; "))
	}
	net, err := model.New(rc.Model, rc.Shape())
	if err != nil {
		return err
	}
	state, err := model.NewState(net.Params().Data, rc.Train.AdamConfig, rc.Train.EMA)
	if err != nil {
		return err
	}
	if err := ck.Restore(state); err != nil {
		return fmt.Errorf("--resume: %w", err)
	}
	saved, err := (&model.CheckpointDir{Dir: dir, Keep: rc.Run.Keep}).Save(model.NewRunCheckpoint(net.Params(), state, rc.CheckpointRun()))
	if err != nil {
		return err
	}
	log.Info("resume: the new run starts from a checkpoint", "from", path, "step", ck.Step, "first_checkpoint", saved)
	return nil
}
