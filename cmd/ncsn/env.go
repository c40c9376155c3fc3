package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// envOf is the environment variable that sets a flag the command line leaves unset:
// --secret-file is NCSN_SECRET_FILE, --join NCSN_JOIN, so containers and units set
// flags through their environment.
func envOf(flagName string) string {
	return "NCSN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// noEnv lists the flags no variable sets: repeatable ones, and those that only make
// sense typed by hand.
var noEnv = map[string]bool{"set": true, "print-config": true}

// envCommands are the commands deployments run, whose flags variables set; the
// others (sample, eval, bench, ...) are typed by hand, and a stray variable such as
// compose's NCSN_NET must not reach them.
var envCommands = map[string]bool{"coordinator": true, "worker": true, "launch": true, "train": true, "status": true}

// parseFlags parses args, then, for the commands deployments run, sets each flag the
// command line did not from its variable. The command line wins over the environment, which wins over the default.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !envCommands[fs.Name()] {
		return nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || noEnv[f.Name] {
			return
		}
		v, ok := os.LookupEnv(envOf(f.Name))
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = usageError{fmt.Errorf("$%s=%q (for --%s): %w", envOf(f.Name), v, f.Name, e)}
		}
	})
	return err
}
