package coordinator

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestAddrFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coordinator.addr")
	if _, err := ReadAddrFile(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrNotExist", err)
	}
	want := Addrs{GRPC: "127.0.0.1:7070", Gossip: "[::1]:7946", PID: 42}
	if err := WriteAddrFile(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAddrFile(path)
	if err != nil || got != want {
		t.Fatalf("read %+v, %v; want %+v", got, err, want)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("%d files in the folder, want only the address file", len(ents))
	}
	for _, bad := range []string{``, `{}`, `{"grpc":"nohost"}`, `{"grpc":"h:1","gossip":"x"}`, `{"grpc":"h:1","pid":-1}`, `[1]`} {
		if _, err := ParseAddrs([]byte(bad)); err == nil {
			t.Errorf("ParseAddrs(%q) accepted", bad)
		}
	}
}

func FuzzParseAddrs(f *testing.F) {
	f.Add([]byte(`{"grpc":"127.0.0.1:1","gossip":"127.0.0.1:2","pid":3}`))
	f.Add([]byte(`{"grpc":":0"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAddrs(b)
		if err != nil {
			return
		}
		if a.GRPC == "" || a.PID < 0 {
			t.Fatalf("accepted %+v from %q", a, b)
		}
	})
}
