package cluster

import (
	"errors"
	"testing"
)

func TestCheckExposure(t *testing.T) {
	for _, tc := range []struct {
		def, insecure bool
		addrs         []string
		exposed       bool
	}{
		{true, false, []string{"127.0.0.1:7070", "[::1]:7946", "localhost:1"}, false},
		{true, false, []string{":7070"}, true},
		{true, false, []string{"127.0.0.1:7070", "0.0.0.0:7946"}, true},
		{true, false, []string{"10.0.0.10:7070"}, true},
		{true, false, []string{"coordinator:7070"}, true},
		{true, true, []string{":7070"}, false},
		{false, false, []string{":7070"}, false},
	} {
		err := CheckExposure(tc.def, tc.insecure, tc.addrs...)
		if got := errors.Is(err, ErrExposed); got != tc.exposed {
			t.Errorf("CheckExposure(%v, %v, %v) = %v, want exposed %v", tc.def, tc.insecure, tc.addrs, err, tc.exposed)
		}
	}
}
