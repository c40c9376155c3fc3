//go:build !linux

package allreduce

import (
	"errors"
	"net"
)

// hostIdentity is empty where abstract Unix sockets do not exist: neighbours use TCP.
func hostIdentity() string { return "" }

func listenLocal(int) (net.Listener, string, error) {
	return nil, "", errors.New("no abstract Unix sockets on this system")
}
