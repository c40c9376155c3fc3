package cluster

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestAuthMetadata: the token of Metadata passes Authorize for its method only, with the
// same secret only, within MaxSkew only.
func TestAuthMetadata(t *testing.T) {
	a, _ := NewAuth([]byte("s"))
	other, _ := NewAuth([]byte("t"))
	late, _ := NewAuth([]byte("s"))
	late.now = func() time.Time { return time.Now().Add(-2 * MaxSkew) }
	const m = "/ncsn.ring.v1.Ring/Pipe"
	for _, tc := range []struct {
		name string
		md   metadata.MD
		ok   bool
	}{
		{"valid", a.Metadata(m), true},
		{"other method", a.Metadata("/x/Y"), false},
		{"other secret", other.Metadata(m), false},
		{"old", late.Metadata(m), false},
		{"none", metadata.MD{}, false},
	} {
		err := a.Authorize("10.0.0.1:5", m, tc.md)
		if (err == nil) != tc.ok || !tc.ok && status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
