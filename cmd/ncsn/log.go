package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// logFlags are the logging flags shared by the long-running commands.
type logFlags struct {
	format, level *string
}

func addLogFlags(fs *flag.FlagSet) *logFlags {
	return &logFlags{
		format: fs.String("log-format", "text", "log format: text or json"),
		level:  fs.String("log-level", "info", "log level: debug, info, warn or error"),
	}
}

// logger builds the slog logger the flags ask for, writing to w.
func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*f.level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", *f.level)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(*f.format) {
	case "text":
		// Text is for people: floats are rounded to 4 significant digits. JSON and the
		// metrics keep every digit.
		text := *opts
		text.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindFloat64 {
				a.Value = slog.Float64Value(roundSig(a.Value.Float64(), 4))
			}
			return a
		}
		return slog.New(slog.NewTextHandler(w, &text)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", *f.format)}
}

// args renders the flags for a child process.
func (f *logFlags) args() []string {
	return []string{"--log-format", *f.format, "--log-level", *f.level}
}

// serveMetrics serves reg's metrics (and the Go runtime's) on addr at /metrics until ctx
// ends; addr "" serves nothing. It returns a function that waits for the server to stop.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) (wait func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	log.Info("metrics", "addr", "http://"+lis.Addr().String()+"/metrics")
	return func() { stop(); srv.Close(); <-done }, nil
}

// printFlags lists fs's flags as the usage lines write them, --name, instead of the
// flag package's single dash.
func printFlags(fs *flag.FlagSet) {
	w := fs.Output()
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		if strings.HasPrefix(usage, "internal:") {
			return // set by ncsn itself for the processes it starts
		}
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		line += "\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t")
		if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "[]" {
			if name == "string" {
				d = strconv.Quote(d)
			}
			line += " (default " + d + ")"
		}
		if !noEnv[f.Name] && envCommands[fs.Name()] {
			line += " [$" + envOf(f.Name) + "]"
		}
		fmt.Fprintln(w, line)
	})
}

// roundSig rounds x to digits significant digits.
func roundSig(x float64, digits int) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	p := math.Pow(10, float64(digits)-math.Ceil(math.Log10(math.Abs(x))))
	return math.Round(x*p) / p
}
