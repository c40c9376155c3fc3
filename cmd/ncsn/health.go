package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// healthURLEnv overrides health's default URL, so an image's HEALTHCHECK can stay one fixed
// command while the metrics address changes per deployment.
const healthURLEnv = "NCSN_HEALTH_URL"

// defaultHealthURL is where the deploy/ files serve metrics (--metrics :9090).
const defaultHealthURL = "http://127.0.0.1:9090/metrics"

func init() {
	commands["health"] = command{
		summary: "exit 0 if a node's metrics endpoint answers (container health checks)",
		run:     runHealth,
	}
}

// runHealth exists because a FROM-scratch image has no shell or curl: the binary itself must
// probe the node. A coordinator or worker serving --metrics is alive enough to answer HTTP;
// one that is wedged or gone is not.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := defaultHealthURL
	if u := os.Getenv(healthURLEnv); u != "" {
		def = u
	}
	url := fs.String("url", def, "metrics URL to probe (default $"+healthURLEnv+", else "+defaultHealthURL+")")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ncsn health [--url URL] [--timeout D]\n\nExits 0 if URL answers 2xx within the timeout, 1 otherwise.")
		printFlags(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return usageError{err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", *url, resp.Status)
	}
	fmt.Fprintf(stdout, "ok %s\n", *url)
	return nil
}
