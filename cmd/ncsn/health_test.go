package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// health must tell a serving node from a failing or absent one: the container's health
// status is all the orchestrator sees.
func TestHealth(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("up 1\n")) }))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 503) }))
	defer bad.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // nothing listens there any more

	if out, errs, code := ncsn(t, "health", "--url", ok.URL); code != 0 || !strings.HasPrefix(out, "ok ") {
		t.Fatalf("healthy endpoint: exit %d, %q %q", code, out, errs)
	}
	if _, errs, code := ncsn(t, "health", "--url", bad.URL); code != 1 || !strings.Contains(errs, "503") {
		t.Fatalf("503 endpoint: exit %d, %q", code, errs)
	}
	if _, _, code := ncsn(t, "health", "--url", gone.URL, "--timeout", "2s"); code != 1 {
		t.Fatalf("closed endpoint: exit %d, want 1", code)
	}
	t.Setenv(healthURLEnv, ok.URL)
	if _, errs, code := ncsn(t, "health"); code != 0 {
		t.Fatalf("URL from $%s: exit %d, %q", healthURLEnv, code, errs)
	}
}
