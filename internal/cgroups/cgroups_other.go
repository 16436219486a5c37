//go:build !linux

package cgroups

import (
	"fmt"

	"github.com/berth-dev/berth/internal/errdefs"
)

// DetectMode reports ModeNone: control groups exist only on Linux.
func DetectMode() Mode { return ModeNone }

// New fails: control groups exist only on Linux.
func New(path string) (Manager, error) { return NewV1(path) }

// NewV1 fails: control groups exist only on Linux.
func NewV1(path string) (Manager, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("cgroup %s: control groups need Linux: %w", path, errdefs.ErrNotSupported)
}

// NewV2 fails: control groups exist only on Linux.
func NewV2(mountpoint, path string) (Manager, error) { return NewV1(path) }
