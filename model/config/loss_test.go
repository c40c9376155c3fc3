package config

import (
	"strings"
	"testing"
)

// The train section's objective keys: defaults, overrides, refusals naming the
// key, and a round trip through the JSON that checkpoints store.
func TestLossKeys(t *testing.T) {
	c, err := Load(write(t, toy), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Train.Loss != "dsm" || c.Train.AnnealPower != 2 || c.Train.Projection != "rademacher" || c.Train.Particles != 1 || c.Train.FDEps != 0.1 {
		t.Fatalf("defaults: %+v", c.Train.LossConfig)
	}
	c, err = Load(write(t, toy), []string{"train.loss=ssm_vr", "train.anneal_power=1", "train.projection=gaussian", "train.n_particles=4", "train.fd_eps=0.05"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Train.Loss != "ssm_vr" || c.Train.AnnealPower != 1 || c.Train.Projection != "gaussian" || c.Train.Particles != 4 || c.Train.FDEps != 0.05 {
		t.Fatalf("overrides: %+v", c.Train.LossConfig)
	}
	back, err := FromJSON(c.JSON())
	if err != nil || back.Train.LossConfig != c.Train.LossConfig {
		t.Fatalf("JSON round trip: %+v, %v", back.Train.LossConfig, err)
	}
	if _, err := Load("", []string{"train.loss=fd_ssm"}); err != nil {
		t.Fatalf("fd_ssm on the default U-Net job: %v", err)
	}
	for _, tc := range []struct {
		sets []string
		want []string
	}{
		{[]string{"train.loss=sm"}, []string{"train.loss", "dsm, ssm, ssm_vr, fd_ssm or esm"}},
		{[]string{"train.loss=ssm"}, []string{"train.loss", "model.arch unet", "fd_ssm"}},
		{[]string{"train.loss=esm", "data.name=gmm", "data.means=[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]", "data.weights=[1]"}, []string{"train.loss", "D = 17", "D <= 16"}},
		{[]string{"train.anneal_power=-2"}, []string{"train.anneal_power"}},
		{[]string{"train.projection=uniform"}, []string{"train.projection"}},
		{[]string{"train.n_particles=0"}, []string{"train.n_particles"}},
		{[]string{"train.fd_eps=2"}, []string{"train.fd_eps"}},
		{[]string{"train.losss=dsm"}, []string{"train.losss: unknown key"}},
	} {
		_, err := Load("", tc.sets)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %v, want one containing %q", tc.sets, err, w)
			}
		}
	}
	// Configs stored before these keys existed load with the defaults.
	old := strings.Replace(string(c.JSON()), `,"loss":"ssm_vr","anneal_power":1,"projection":"gaussian","n_particles":4,"fd_eps":0.05`, "", 1)
	if old == string(c.JSON()) {
		t.Fatalf("stored config %s has no loss keys to remove", c.JSON())
	}
	back, err = FromJSON([]byte(old))
	if err != nil || back.Train.Loss != "dsm" || back.Train.AnnealPower != 2 {
		t.Fatalf("old stored config: %+v, %v", back.Train.LossConfig, err)
	}
}
