package main

import (
	"os/exec"
	"strings"
	"testing"
)

// berth links no registry client: net/http, TLS and go-containerregistry
// cost every berth process milliseconds of initialisation, so they live in
// berth-registry (internal/regcli). This asks the go command what the
// package links, so that an import that brings them back fails here.
func TestNoRegistryClient(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list berth's packages")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "net/http" || p == "crypto/tls" || p == "crypto/x509" ||
			strings.HasPrefix(p, "github.com/google/go-containerregistry/") ||
			p == "github.com/berth-dev/berth/internal/registry" {
			t.Errorf("berth links %s: the registry client belongs in berth-registry", p)
		}
	}
}
