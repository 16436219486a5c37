package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/errdefs"
)

// Where the workload's root is assembled, in the agent's view (the
// container engine takes newRoot as the spec's root path).
const (
	stageDir   = "/berth"
	layersDir  = stageDir + "/layers"
	scratchDir = stageDir + "/scratch"
	newRoot    = stageDir + "/root"
)

// mountScratch mounts the root's scratch disk (or a tmpfs when it names
// none) for the overlay's upper and work directories; nothing for a
// request without a root, which setupRoot refuses.
func mountScratch(r *agent.Root) error {
	if r == nil {
		return nil
	}
	if err := os.MkdirAll(scratchDir, 0o755); err != nil {
		return err
	}
	if r.Scratch != "" {
		dev, err := resolveDisk(r.Scratch)
		if err != nil {
			return fmt.Errorf("scratch disk: %w", err)
		}
		if err := unix.Mount(dev, scratchDir, "ext4", unix.MS_NOATIME, "noinit_itable"); err != nil {
			return fmt.Errorf("mount scratch disk %s (ext4): %w", dev, err)
		}
	} else if err := unix.Mount("tmpfs", scratchDir, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount scratch tmpfs: %w", err)
	}
	tracef("scratch mounted")
	return nil
}

// mountRoot mounts r's layer disks and, once scratch says the scratch disk
// is mounted, the overlay of them at newRoot: the part of the root that
// depends on the disks alone, which a template's guest does before it is
// saved.
func mountRoot(r *agent.Root, mods *moduleSet, scratch <-chan error) error {
	if r == nil || len(r.Layers) == 0 {
		return fmt.Errorf("run request names no root layer disks: %w", errdefs.ErrInvalid)
	}
	if err := mods.WaitFor("erofs"); err != nil {
		return err
	}
	var lowers []string
	for i, l := range r.Layers {
		dev, err := resolveDisk(l)
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		dir := filepath.Join(layersDir, strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(dev, dir, "erofs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("mount layer %d (%s, erofs): %w", i, dev, err)
		}
		lowers = append(lowers, dir)
	}
	tracef("layers mounted")
	slices.Reverse(lowers) // overlayfs lists the top layer first
	if err := <-scratch; err != nil {
		return err
	}
	if err := mods.WaitFor("overlay"); err != nil {
		return err
	}
	upper, work := filepath.Join(scratchDir, "upper"), filepath.Join(scratchDir, "work")
	for _, d := range []string{upper, work, newRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lowers, ":"), upper, work)
	if err := unix.Mount("overlay", newRoot, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay root: %w", err)
	}
	tracef("overlay mounted")
	return nil
}

// unmountPremounted takes down what mountRoot mounted for n layers (and
// the scratch disk), detached: nothing uses it yet.
func unmountPremounted(n int) {
	_ = unix.Unmount(newRoot, unix.MNT_DETACH)
	_ = unix.Unmount(scratchDir, unix.MNT_DETACH)
	for i := 0; i < n; i++ {
		_ = unix.Unmount(filepath.Join(layersDir, strconv.Itoa(i)), unix.MNT_DETACH)
	}
}

// mountAt mounts m (a virtio-fs share, a tmpfs or a guest disk) at dir
// in the agent's view, outside the workload's root: the container engine
// binds it in at m.Target.
func mountAt(m agent.Mount, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", m.Target, err)
	}
	var flags uintptr
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	src, typ := m.Source, m.Type
	switch typ {
	case "virtiofs", "tmpfs":
	case "bind":
		return fmt.Errorf("mount %s: a bind in the guest is the spec's, not a share: %w", m.Target, errdefs.ErrInvalid)
	default:
		dev, err := resolveDisk(m.Source)
		if err != nil {
			return fmt.Errorf("mount %s: %w", m.Target, err)
		}
		src = dev
	}
	if err := unix.Mount(src, dir, typ, flags, ""); err != nil {
		return fmt.Errorf("mount %s (%s) for %s: %w", m.Source, typ, m.Target, err)
	}
	return nil
}

// resolveDisk turns a disk reference into a device node: a /dev path as
// it is, anything else as the serial of a virtio-blk disk
// (/sys/block/NAME/serial). It waits for the disk to appear.
func resolveDisk(ref string) (string, error) {
	deadline := time.Now().Add(deviceWait)
	for {
		if strings.HasPrefix(ref, "/dev/") {
			if _, err := os.Stat(ref); err == nil {
				return ref, nil
			}
		} else {
			ents, _ := os.ReadDir("/sys/block")
			for _, e := range ents {
				b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "serial"))
				if err == nil && strings.TrimSpace(string(b)) == ref {
					return "/dev/" + e.Name(), nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no disk %q in the guest: %w", ref, errdefs.ErrNotFound)
		}
		time.Sleep(devicePoll)
	}
}

// unmountAll unmounts what the workload's root holds, deepest first, so
// the scratch disk is clean at power-off. Failures are not fatal: the
// guest syncs and powers off regardless.
func unmountAll() {
	ls, err := lines("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var targets []string
	for _, l := range ls {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] != "/" {
			targets = append(targets, unescapeMount(f[4]))
		}
	}
	slices.SortFunc(targets, func(a, b string) int { return len(b) - len(a) })
	for _, t := range targets {
		_ = unix.Unmount(t, unix.MNT_DETACH)
	}
}

// unescapeMount undoes the octal escapes of a path in /proc/self/mountinfo
// (space, tab, newline and backslash).
var unescapeMount = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace
