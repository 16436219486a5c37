package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Control is one value for one control file of a cgroup: File of
// Controller, or, with File empty, the first of Alts that the kernel has
// (I/O schedulers name their weights each their own way).
type Control struct {
	Controller, File, Value string
	Alts                    []string
}

// name is the control's file, or the first it may be.
func (c Control) name() string {
	if c.File == "" && len(c.Alts) > 0 {
		return c.Alts[0]
	}
	return c.File
}

// WriteControls writes cs, in order, to the control files of the cgroup at
// path (as New takes it), which must exist: on a cgroup v2 host in the
// unified hierarchy, on v1 and hybrid hosts in each controller's own. It
// is for the settings a Manager's Resources do not carry. No file is ever
// created: a controller or control file this host lacks fails with
// errdefs.ErrNotSupported, in one line naming it.
func WriteControls(path string, cs []Control) error {
	if len(cs) == 0 {
		return nil
	}
	if err := checkPath(path); err != nil {
		return err
	}
	switch mode := DetectMode(); mode {
	case ModeV2:
		return writeControls(path, cs, func(Control) (string, string) {
			return filepath.Join(Root, path), "is not enabled for the cgroup"
		})
	case ModeV1, ModeHybrid:
		mounts, err := v1Mounts()
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", path, err)
		}
		return writeControls(path, cs, func(c Control) (string, string) {
			if mnt, ok := mounts[c.Controller]; ok {
				return filepath.Join(mnt, path), "has no such control"
			}
			return "", "is not mounted"
		})
	default:
		return fmt.Errorf("cgroup %s: %s needs cgroups, and this host has %s: %w", path, cs[0].name(), mode, errdefs.ErrNotSupported)
	}
}

// writeControls writes cs into the directories where says (for a
// controller that has none, "" and why), saying how the controller falls
// short when a file is missing.
func writeControls(path string, cs []Control, where func(Control) (dir, missing string)) error {
	for _, c := range cs {
		dir, missing := where(c)
		unsupported := func() error {
			return fmt.Errorf("cgroup %s: %s %s: the %s cgroup controller %s: %w", path, c.name(), c.Value, c.Controller, missing, errdefs.ErrNotSupported)
		}
		if dir == "" {
			return unsupported()
		}
		file := c.File
		if file == "" {
			for _, f := range c.Alts {
				if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
					file = f
					break
				}
			}
			if file == "" {
				return unsupported()
			}
		}
		if err := writeFile(path, dir, file, c.Value); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				c.File = file
				return unsupported()
			}
			return err
		}
	}
	return nil
}
