package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/ncsn/ncsn/internal/atomicfile"
)

// Addrs is where a coordinator can be reached. A coordinator started with an address
// file writes it there once it listens, so launchers and scripts learn a port 0
// address from a file written for them instead of from its log.
type Addrs struct {
	GRPC   string `json:"grpc"`
	Gossip string `json:"gossip"`
	PID    int    `json:"pid"`
}

// WriteAddrFile writes a to path atomically: a reader sees the whole file or none.
func WriteAddrFile(path string, a Addrs) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o666); err != nil {
		return fmt.Errorf("coordinator: address file: %w", err)
	}
	return nil
}

// ReadAddrFile reads an address file; a missing file is reported as os.ErrNotExist.
func ReadAddrFile(path string) (Addrs, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Addrs{}, err
	}
	return ParseAddrs(b)
}

// ParseAddrs decodes an address file's content.
func ParseAddrs(b []byte) (Addrs, error) {
	var a Addrs
	if err := json.Unmarshal(b, &a); err != nil {
		return Addrs{}, fmt.Errorf("coordinator: address file: %w", err)
	}
	if _, _, err := net.SplitHostPort(a.GRPC); err != nil {
		return Addrs{}, fmt.Errorf("coordinator: address file: grpc address %q: %w", a.GRPC, err)
	}
	if a.Gossip != "" {
		if _, _, err := net.SplitHostPort(a.Gossip); err != nil {
			return Addrs{}, fmt.Errorf("coordinator: address file: gossip address %q: %w", a.Gossip, err)
		}
	}
	if a.PID < 0 {
		return Addrs{}, errors.New("coordinator: address file: negative pid")
	}
	return a, nil
}
