package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal, where progress is drawn in
// place; elsewhere (files, CI logs) it is written as plain lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressBar returns a progress callback for a long loop: a bar redrawn in
// place on a terminal, a line every 10% otherwise.
func progressBar(w io.Writer, label string) func(done, total int) {
	tty := isTerminal(w)
	start := time.Now()
	next := 0
	return func(done, total int) {
		if total <= 0 {
			return
		}
		pct := 100 * done / total
		if !tty {
			if pct >= next || done == total {
				fmt.Fprintf(w, "%s: %d%% (%d/%d)\n", label, pct, done, total)
				next = pct/10*10 + 10
			}
			return
		}
		el := time.Since(start)
		eta := "?"
		if done > 0 {
			eta = (time.Duration(float64(el) / float64(done) * float64(total-done))).Round(time.Second).String()
		}
		const width = 30
		fill := width * done / total
		fmt.Fprintf(w, "\r%s [%s%s] %3d%% ETA %s ", label, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), pct, eta)
		if done == total {
			fmt.Fprintln(w)
		}
	}
}
