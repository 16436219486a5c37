package registry

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
)

func TestInsecureOnlyLoopbackAndListed(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost:5000": true, "127.0.0.1:5000": true, "127.1.2.3": true, "[::1]:5000": true,
		"10.0.0.1:5000": false, "192.168.1.1": false, "registry.example": false, "insecure.example:5000": true,
		"insecure.example:5001": false, "byhost.example:1234": true, "byhost.example": true,
	} {
		if got := Insecure(host, []string{"insecure.example:5000", "byhost.example"}); got != want {
			t.Errorf("Insecure(%s) = %v", host, got)
		}
	}
}

// roundTripFunc is an http.RoundTripper of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestGuardRefusesPlainHTTP: a push or pull to a registry with a name
// that is not loopback goes over plain HTTP only when the user lists it.
func TestGuardRefusesPlainHTTP(t *testing.T) {
	reached := 0
	inner := roundTripFunc(func(*http.Request) (*http.Response, error) {
		reached++
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})
	for _, c := range []struct {
		url      string
		insecure []string
		ok       bool
	}{
		{"http://registry.example:5000/v2/", nil, false},
		{"http://registry.example:5000/v2/", []string{"registry.example:5000"}, true},
		{"http://registry.example:5000/v2/", []string{"registry.example"}, true},
		{"http://registry.example:5000/v2/", []string{"other.example:5000"}, false},
		{"http://127.0.0.1:5000/v2/", nil, true},
		{"https://registry.example/v2/", nil, true},
	} {
		reached = 0
		req, _ := http.NewRequest(http.MethodGet, c.url, nil)
		_, err := newGuard(inner, c.insecure).RoundTrip(req)
		if (err == nil) != c.ok || (reached == 1) != c.ok {
			t.Errorf("%s with insecure %q: err %v, reached %d", c.url, c.insecure, err, reached)
		}
		if err != nil && !strings.Contains(err.Error(), "plain HTTP to registry.example:5000 refused") {
			t.Errorf("error: %v", err)
		}
	}
}

func TestInsecureRegistriesSources(t *testing.T) {
	root := t.TempDir()
	t.Setenv(InsecureEnv, "env.example:1, env2.example")
	got, err := InsecureRegistries(root, []string{"flag.example:5000"})
	if err != nil || !slices.Equal(got, []string{"flag.example:5000", "env.example:1", "env2.example"}) {
		t.Fatalf("without a file: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(root, ConfigFile), []byte(`{"insecure-registries":["http://file.example:80/"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = InsecureRegistries(root, nil)
	if err != nil || !slices.Equal(got, []string{"env.example:1", "env2.example", "file.example:80"}) {
		t.Fatalf("with a file: %q, %v", got, err)
	}
	for _, bad := range []string{`{"insecure-registries":"x"}`, `{`, `{"insecure-registries":["a/b"]}`} {
		if err := os.WriteFile(filepath.Join(root, ConfigFile), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := InsecureRegistries(root, nil); !errors.Is(err, errdefs.ErrInvalid) || strings.Contains(err.Error(), "\n") {
			t.Errorf("file %s: %v", bad, err)
		}
	}
}
