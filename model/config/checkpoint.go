package config

import (
	"errors"

	"github.com/ncsn/ncsn/model"
)

// CheckpointRun is what the run's checkpoints record of it, and how a resuming
// run recognises them: by its config, read back as FromJSON reads it so that
// keys added since the checkpoint was written take their defaults.
func (c Config) CheckpointRun() model.RunMeta {
	want := c.JSON()
	return model.RunMeta{
		Config: want,
		Seed:   c.Run.Seed,
		Batch:  c.Train.GlobalBatch,
		SameRun: func(stored []byte) error {
			sc, err := FromJSON(stored)
			if err != nil {
				return err
			}
			if string(sc.JSON()) != string(want) {
				return errors.New("its config differs")
			}
			return nil
		},
	}
}
