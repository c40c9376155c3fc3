package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ncsn/ncsn/proto/coordpb"
	"github.com/ncsn/ncsn/worker"
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

// stepLine returns the progress line of a single-process run, fed every applied step:
// redrawn in place every second on a terminal, a plain line every 10 s elsewhere.
func stepLine(w io.Writer, batch int) func(worker.StepInfo) {
	tty := isTerminal(w)
	period := 10 * time.Second
	if tty {
		period = time.Second
	}
	p := progress{batch: batch}
	var last time.Time
	return func(s worker.StepInfo) {
		now := time.Now()
		if now.Sub(last) < period && s.Step < s.Total {
			return
		}
		last = now
		r := &coordpb.StatusResponse{Step: s.Step, TotalSteps: s.Total, Loss: s.Loss, SamplesPerSec: s.SamplesPerSec,
			Members: make([]*coordpb.Member, max(s.Workers, 1))}
		if tty {
			fmt.Fprintf(w, "\r%s\033[K", p.line(r, now))
			if s.Step == s.Total {
				fmt.Fprintln(w)
			}
		} else {
			fmt.Fprintln(w, p.line(r, now))
		}
	}
}
