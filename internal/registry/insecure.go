package registry

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/regfile"
)

// InsecureEnv is the environment variable listing insecure registries
// (host or host:port, separated by commas or spaces).
const InsecureEnv = "BERTH_INSECURE_REGISTRIES"

// ConfigFile is the name of berth's registry configuration in its data
// root: {"insecure-registries": ["HOST[:PORT]", ...]}, the key Docker's
// daemon.json uses.
const ConfigFile = "registries.json"

// registriesConfig is the content of ROOT/registries.json.
type registriesConfig struct {
	Insecure []string `json:"insecure-registries"`
}

// InsecureRegistries gathers the registries reached over plain HTTP or
// unverified TLS: those of flags, of $BERTH_INSECURE_REGISTRIES and of
// the file registries.json in the data root (a missing file lists none).
func InsecureRegistries(root string, flags []string) ([]string, error) {
	list := slices.Clone(flags)
	list = append(list, strings.FieldsFunc(os.Getenv(InsecureEnv), func(r rune) bool { return r == ',' || r == ' ' })...)
	p := root + "/" + ConfigFile
	data, err := regfile.ReadFile(unix.AT_FDCWD, p, 0, 1<<20)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("%s: %w", p, err)
	default:
		var c registriesConfig
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("%s: %v: %w", p, err, errdefs.ErrInvalid)
		}
		list = append(list, c.Insecure...)
	}
	for i, h := range list {
		h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(h, "http://"), "https://"), "/")
		if h == "" || strings.ContainsAny(h, "/ ") {
			return nil, fmt.Errorf("insecure registry %q: want HOST[:PORT]: %w", list[i], errdefs.ErrInvalid)
		}
		list[i] = h
	}
	return list, nil
}

// Insecure reports whether berth may reach host (host[:port]) over plain
// HTTP or TLS whose certificate it does not verify: a loopback host
// (localhost, 127.0.0.0/8, ::1) or one listed in insecure, by host:port
// or by host alone.
func Insecure(host string, insecure []string) bool {
	if slices.Contains(insecure, host) {
		return true
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = strings.Trim(host, "[]")
	}
	if slices.Contains(insecure, h) || h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// listed reports whether host is listed in insecure (not merely loopback).
func listed(host string, insecure []string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	return slices.Contains(insecure, host) || slices.Contains(insecure, h)
}

// guard is the transport under everything: it refuses plain HTTP to any
// host Insecure does not allow, and verifies TLS certificates but for
// those hosts.
type guard struct {
	inner, unverified http.RoundTripper
	insecure          []string
}

// newGuard wraps base (default a copy of http.DefaultTransport).
func newGuard(base http.RoundTripper, insecure []string) *guard {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	g := &guard{inner: base, unverified: base, insecure: insecure}
	if t, ok := base.(*http.Transport); ok {
		u := t.Clone()
		if u.TLSClientConfig == nil {
			u.TLSClientConfig = &tls.Config{}
		}
		u.TLSClientConfig.InsecureSkipVerify = true
		g.unverified = u
	}
	return g
}

func (g *guard) RoundTrip(r *http.Request) (*http.Response, error) {
	ok := Insecure(r.URL.Host, g.insecure)
	if r.URL.Scheme == "http" && !ok {
		return nil, fmt.Errorf("plain HTTP to %s refused: only loopback addresses and insecure registries (--insecure-registry) are reached without TLS", r.URL.Host)
	}
	if ok {
		return g.unverified.RoundTrip(r)
	}
	return g.inner.RoundTrip(r)
}
