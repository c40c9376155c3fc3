package allreduce

import (
	"context"
	"io"
	"net"
	"testing"
)

// BenchmarkLoopbackCopy moves 2 MiB writes (a piece) from one socket to another in this
// process, over a Unix socket opened as neighbours on one host open theirs, and over TCP
// loopback, and reports the CPU (user + system, both ends) each GiB costs: why same-host
// streams move to Unix sockets.
//
//	go test -run '^$' -bench LoopbackCopy ./allreduce
func BenchmarkLoopbackCopy(b *testing.B) {
	const piece = 2 << 20
	for _, network := range []string{"unix", "tcp"} {
		b.Run(network, func(b *testing.B) {
			var lis net.Listener
			var dial func() (net.Conn, error)
			switch network {
			case "unix":
				l, name, err := listenLocal(localBuf)
				if err != nil {
					b.Skip(err)
				}
				lis, dial = l, func() (net.Conn, error) { return dialLocal(context.Background(), name) }
			case "tcp":
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				lis, dial = l, func() (net.Conn, error) { return net.Dial("tcp", l.Addr().String()) }
			}
			defer lis.Close()
			read := make(chan error, 1)
			go func() {
				c, err := lis.Accept()
				if err != nil {
					read <- err
					return
				}
				defer c.Close()
				_, err = io.CopyBuffer(io.Discard, c, make([]byte, piece))
				read <- err
			}()
			c, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, piece)
			b.SetBytes(piece)
			b.ResetTimer()
			cpu0 := cpuTime()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.Close()
			if err := <-read; err != nil {
				b.Fatal(err)
			}
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(cpu.Milliseconds())/(float64(b.N)*piece/(1<<30)), "cpu-ms/GiB")
		})
	}
}
