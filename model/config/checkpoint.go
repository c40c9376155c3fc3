package config

import "github.com/ncsn/ncsn/model"

// CheckpointRun is what the run's checkpoints record of it, and how a resuming
// run recognises its own: by the identity keys of its config (SameRun).
func (c Config) CheckpointRun() model.RunMeta {
	return model.RunMeta{Config: c.JSON(), Seed: c.Run.Seed, Batch: c.Train.GlobalBatch, SameRun: c.SameRun}
}
