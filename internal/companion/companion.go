// Package companion finds berth's companion binaries (berth-init,
// berth-registry): small programs installed next to the binary that runs,
// or in ../lib/berth from it, so that what each process links stays
// small and starts fast.
package companion

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Find is the path of the executable companion called name, looked for
// next to the running binary, then in ../lib/berth from it.
func Find(name string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("%s: find berth's own binary: %w", name, err)
	}
	dir := filepath.Dir(self)
	lib := filepath.Join(dir, "..", "lib", "berth")
	for _, p := range []string{filepath.Join(dir, name), filepath.Join(lib, name)} {
		if unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is neither next to %s nor in %s: %w", name, self, lib, errdefs.ErrUnavailable)
}
