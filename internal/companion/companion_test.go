package companion

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
)

// The test binary's own directory holds no companion of that name: Find
// says where it looked, in one line classed unavailable; an executable
// placed next to the test binary is found.
func TestFind(t *testing.T) {
	name := "berth-companion-test-" + filepath.Base(t.TempDir())
	_, err := Find(name)
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Find of a missing companion: %v; want unavailable", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(self), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Skipf("cannot write next to the test binary: %v", err)
	}
	t.Cleanup(func() { os.Remove(p) })
	if got, err := Find(name); err != nil || got != p {
		t.Fatalf("Find = %q, %v; want %q", got, err, p)
	}
}
