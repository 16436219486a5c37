//go:build !linux

package seccomp

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Load is only implemented on Linux.
func Load(p *specs.LinuxSeccomp) error {
	return fmt.Errorf("seccomp: load filter: %w", errdefs.ErrNotSupported)
}
