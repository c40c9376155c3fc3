package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is set at link time (-ldflags "-X main.version=...") for releases.
var version = "dev"

func init() {
	commands["version"] = command{
		summary: "print the version",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			rev := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						rev = " " + s.Value
					}
				}
			}
			fmt.Fprintf(stdout, "ncsn %s%s %s/%s %s\n", version, rev, runtime.GOOS, runtime.GOARCH, runtime.Version())
			return nil
		},
	}
}
