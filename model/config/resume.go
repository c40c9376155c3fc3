package config

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// identity lists the keys that make a run the run it is: a checkpoint resumes only under
// a config that agrees on every one. Every other key (steps, cadences, lr, ema, codec,
// cluster, logging, sampling) is free to change on resume. data.path is where the files
// are on this host, not which data they are.
var identity = []string{"model.", "data.", "noise.", "run.seed", "run.id"}

var notIdentity = map[string]bool{"data.path": true}

// IsIdentity reports whether the key (e.g. "model.channels") is one of the run's identity.
func IsIdentity(key string) bool {
	if notIdentity[key] {
		return false
	}
	for _, p := range identity {
		if key == p || strings.HasSuffix(p, ".") && strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// Changes lists the keys whose values differ between old and c, as "key: old → new",
// in key order; identity picks the identity keys, or the free ones.
func (c Config) Changes(old Config, identity bool) []string {
	a, b := flatten(old.YAML()), flatten(c.YAML())
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		if a[k] != b[k] && IsIdentity(k) == identity {
			out = append(out, fmt.Sprintf("%s: %s → %s", k, show(a[k]), show(b[k])))
		}
	}
	sort.Strings(out)
	return out
}

func show(v string) string {
	if v == "" {
		return "(unset)"
	}
	return v
}

// SameRun checks that a checkpoint's stored config (JSON) is this run's: it refuses a
// change to an identity key, naming each with its old and new value.
func (c Config) SameRun(stored []byte) error {
	old, err := FromJSON(stored)
	if err != nil {
		return err
	}
	if d := c.Changes(old, true); len(d) > 0 {
		return fmt.Errorf("the run's identity differs: %s (model, data, noise and seed must match to resume; start a new --out, or --resume from the checkpoint to fine-tune)", strings.Join(d, "; "))
	}
	return nil
}

// flatten maps each leaf of the config's YAML, whose names are the keys users write, to
// its value as JSON text, keyed by its dotted path.
func flatten(b []byte) map[string]string {
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		panic(fmt.Sprintf("config: flatten: %v", err)) // our own JSON
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if m, ok := v.(map[string]any); ok {
			for k, x := range m {
				walk(prefix+k+".", x)
			}
			return
		}
		j, _ := json.Marshal(v)
		out[strings.TrimSuffix(prefix, ".")] = string(j)
	}
	walk("", doc)
	return out
}
