package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/ncsn/ncsn/internal/config"
)

// setFlags collects repeated --set key=value flags.
type setFlags []string

func (s *setFlags) String() string     { return fmt.Sprint(*s) }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

// runConfigFlags are the flags of every command that takes a run config.
type runConfigFlags struct {
	path  *string
	sets  setFlags
	print *bool
}

func addRunConfigFlags(fs *flag.FlagSet) *runConfigFlags {
	f := &runConfigFlags{}
	f.path = fs.String("config", "", "run config YAML (default: the embedded default, synthetic images)")
	fs.Var(&f.sets, "set", "override a config key, e.g. --set train.lr=1e-4 (repeatable)")
	f.print = fs.Bool("print-config", false, "print the run config (defaults, --config and --set resolved) as YAML and exit")
	return f
}

// load reads and validates the run config. With --print-config it prints
// the config to stdout and reports done, and the command should return.
func (f *runConfigFlags) load(stdout io.Writer) (rc config.Config, done bool, err error) {
	rc, err = config.Load(*f.path, f.sets)
	if err != nil {
		return rc, false, usageError{err}
	}
	if *f.print {
		_, err := stdout.Write(rc.YAML())
		return rc, true, err
	}
	return rc, false, nil
}

// configDefaultsHelp ends the help of the commands that take a run config.
const configDefaultsHelp = `
Config defaults: every key of the YAML file has a default chosen for its dataset
(data.name, default synthetic); --print-config shows them all, e.g.
  ncsn launch --print-config                       # the embedded default job
  ncsn launch --print-config --set data.name=gmm   # the 2-D toy's defaults
Commented examples per dataset are in the repository's examples/ folder.
`
