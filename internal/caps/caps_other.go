//go:build !linux

package caps

import (
	"fmt"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Last returns the highest capability number this package knows: there is no
// kernel to ask off Linux.
func Last() int { return MaxKnown }

// Apply fails: capabilities exist only on Linux.
func Apply(c *specs.LinuxCapabilities) error {
	return fmt.Errorf("capabilities: need Linux: %w", errdefs.ErrNotSupported)
}

// Current fails: capabilities exist only on Linux.
func Current() (eff, perm, inh, bnd, amb uint64, err error) {
	return 0, 0, 0, 0, 0, fmt.Errorf("capabilities: need Linux: %w", errdefs.ErrNotSupported)
}
