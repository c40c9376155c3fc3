package cluster

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// ErrExposed is returned by CheckExposure when a node would accept strangers.
var ErrExposed = errors.New("no cluster secret for a non-loopback address")

// Loopback reports whether addr (host:port) can be reached from this host only.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckExposure refuses a node that listens beyond loopback with the built-in secret,
// which anyone can read in the source: a stranger on the network could join it and send
// gradients. insecure accepts the risk.
func CheckExposure(fromDefault, insecure bool, addrs ...string) error {
	if !fromDefault || insecure {
		return nil
	}
	for _, a := range addrs {
		if a != "" && !Loopback(a) {
			return fmt.Errorf("%w: %s would accept anyone who reaches it. Make a secret and give it to the coordinator and every worker:\n"+
				"  head -c 32 /dev/urandom | base64 > secret && chmod 600 secret\n"+
				"  ncsn coordinator --secret-file secret ...   (or NCSN_SECRET_FILE=secret)\n"+
				"or listen on 127.0.0.1 for one host, or pass --insecure to accept the risk", ErrExposed, a)
		}
	}
	return nil
}
