package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/ncsn/ncsn/internal/cluster"
	"github.com/ncsn/ncsn/internal/runlock"
	"github.com/ncsn/ncsn/model/config"
	"google.golang.org/grpc"
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

// loadRun is load for the commands that train: it also resolves the keys set
// to auto (NCSNv2's techniques 1–3, from the data) and logs what they became,
// so that the run stores and hands out numbers. --print-config prints auto as auto.
func (f *runConfigFlags) loadRun(stdout io.Writer, log *slog.Logger) (config.Config, bool, error) {
	rc, done, err := f.load(stdout)
	if err != nil || done {
		return rc, done, err
	}
	auto := rc.Auto.Keys()
	rc, p, err := rc.Resolve()
	if err != nil {
		return rc, false, err
	}
	if len(auto) > 0 {
		log.Info("resolved auto (ncsn plan explains it)", "keys", auto, "sigma_max", rc.Noise.SigmaMax,
			"levels", rc.Noise.Levels, "eps", rc.Sample.Eps, "gamma", p.Gamma, "steps_per_level", rc.Sample.StepsPerLevel)
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
Image datasets default to NCSNv2's recipe: noise.sigma_max, noise.levels and
sample.eps are auto, resolved from the data when the run starts; ncsn plan
prints what they become.
`

// lockRun keeps a second run out of the folder out. A coordinator started by `ncsn
// launch` finds the folder held by its parent, which holds it for the whole run.
func lockRun(out string) (*runlock.Lock, error) {
	l, err := runlock.Acquire(out)
	var busy *runlock.BusyError
	if errors.As(err, &busy) && busy.PID == os.Getppid() {
		return nil, nil
	}
	return l, err
}

// lossTitle heads a run's loss curve.
func lossTitle(rc config.Config) string {
	return fmt.Sprintf("%s loss, %s on %s", strings.ToUpper(rc.Train.Loss), rc.Model.Arch, rc.Data.Name)
}

// tlsFlags are the TLS flags of the commands that speak gRPC.
type tlsFlags struct{ cert, key, ca *string }

func addTLSFlags(fs *flag.FlagSet) *tlsFlags {
	return &tlsFlags{
		cert: fs.String("tls-cert", "", "PEM certificate of this node (TLS for gRPC; with --tls-key)"),
		key:  fs.String("tls-key", "", "PEM private key of --tls-cert"),
		ca:   fs.String("tls-ca", "", "PEM CA that signs every node's certificate: peers must present one it signed (mutual TLS)"),
	}
}

func (f *tlsFlags) files() cluster.TLSFiles {
	return cluster.TLSFiles{Cert: *f.cert, Key: *f.key, CA: *f.ca}
}

// server is the gRPC server option of the flags, nil without TLS.
func (f *tlsFlags) server() ([]grpc.ServerOption, error) {
	if !f.files().Enabled() {
		return nil, nil
	}
	o, err := f.files().ServerOption()
	if err != nil {
		return nil, usageError{err}
	}
	return []grpc.ServerOption{o}, nil
}

// configs are the server and client TLS of the flags, nil without TLS.
func (f *tlsFlags) configs() (server, client *tls.Config, err error) {
	if !f.files().Enabled() {
		return nil, nil, nil
	}
	if server, err = f.files().ServerConfig(); err != nil {
		return nil, nil, usageError{err}
	}
	if client, err = f.files().ClientConfig(); err != nil {
		return nil, nil, usageError{err}
	}
	return server, client, nil
}

// dial is the gRPC dial option of the flags, nil without TLS.
func (f *tlsFlags) dial() ([]grpc.DialOption, error) {
	if !f.files().Enabled() {
		return nil, nil
	}
	o, err := f.files().DialOption()
	if err != nil {
		return nil, usageError{err}
	}
	return []grpc.DialOption{o}, nil
}
