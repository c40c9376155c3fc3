package allreduce

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
)

// hostIdentity names this kernel and network namespace: the boot's random id and the
// namespace's inode. Two processes with the same identity can reach each other's abstract
// Unix sockets, which live in the network namespace.
func hostIdentity() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	ns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(boot)) + "/" + ns
}

// listenLocal listens on an abstract Unix socket of a random name, which only neighbours that
// asked over an authorized stream learn. It refuses if the kernel caps a Unix socket's send
// buffer below minBuf (net.core.wmem_max): a 2 MiB piece then crosses in many small hand-offs,
// slower than TCP loopback, whose buffers grow on their own.
func listenLocal(minBuf int) (net.Listener, string, error) {
	if got, err := unixSendBuffer(minBuf); err != nil {
		return nil, "", err
	} else if got < minBuf {
		return nil, "", fmt.Errorf("the kernel grants Unix sockets %d bytes of send buffer, not %d: raise net.core.wmem_max to %d", got, minBuf, minBuf)
	}
	var b [16]byte
	rand.Read(b[:])
	name := "@ncsn-ring-" + hex.EncodeToString(b[:])
	lis, err := net.Listen("unix", name)
	if err != nil {
		return nil, "", err
	}
	return lis, name, nil
}

// unixSendBuffer asks for a Unix stream socket's send buffer of n bytes and returns what the
// kernel grants (it books twice the asked size for overhead, so it reports up to 2n).
func unixSendBuffer(n int) (int, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socketpair: %w", err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	if err := syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, n); err != nil {
		return 0, fmt.Errorf("SO_SNDBUF: %w", err)
	}
	got, err := syscall.GetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	if err != nil {
		return 0, fmt.Errorf("SO_SNDBUF: %w", err)
	}
	return got / 2, nil
}
