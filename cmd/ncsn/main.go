// Command ncsn trains noise-conditional score networks, alone or across processes and machines.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand: it parses its own flags from args.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is filled by the init functions of this package's files, one file per subcommand.
var commands = map[string]command{}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ncsn <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'ncsn <command> -h' for a command's flags.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		usage(stderr)
		return 2
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help" && len(args) == 1:
		usage(stdout)
		return 0
	case args[0] == "help": // ncsn help CMD [SUBCMD] is CMD [SUBCMD] -h
		args = append(args[1:], "-h")
	case args[0] == "--version" || args[0] == "-version":
		args = []string{"version"}
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ncsn: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	// The first SIGINT or SIGTERM stops the command as it chooses (a long run checkpoints
	// its last committed step); a second one kills the process as usual.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-sigc:
			signal.Stop(sigc)
			cancel(signalError{sig.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	err := cmd.run(ctx, args[1:], stdout, stderr)
	signal.Stop(sigc)
	var sig signalError
	if errors.As(context.Cause(ctx), &sig) {
		var in interrupted
		if errors.As(err, &in) {
			fmt.Fprintf(stderr, "ncsn %s: interrupted at step %d; run the same command to resume\n", args[0], in.step)
		} else if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "ncsn %s: %v\n", args[0], err)
		} else {
			fmt.Fprintf(stderr, "ncsn %s: interrupted\n", args[0])
		}
		return 128 + int(sig.sig) // 130 for SIGINT, 143 for SIGTERM, as shells report them
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		// Packages name themselves in their errors ("worker: ..."): say it once.
		msg := strings.TrimPrefix(err.Error(), args[0]+": ")
		fmt.Fprintf(stderr, "ncsn %s: %s\n", args[0], msg)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// signalError is the cause of a command's context ending on a signal.
type signalError struct{ sig syscall.Signal }

func (e signalError) Error() string { return "signal: " + e.sig.String() }

// interrupted is the error of a run stopped by a signal after checkpointing its
// committed step.
type interrupted struct{ step int64 }

func (e interrupted) Error() string { return fmt.Sprintf("interrupted at step %d", e.step) }

// usageError marks errors in how a command was called (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }
