package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/errdefs"
)

// Where the workload's root is assembled on the initramfs before the agent
// moves into it.
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

// setupRoot assembles the workload's root from the request's disks (the
// scratch disk is mounted by mountScratch, whose result scratch gives),
// each step as soon as the modules it needs are in (mods), makes its
// mounts, and moves the agent into it: the initramfs is the
// kernel's rootfs, which pivot_root refuses, so like switch_root it moves
// the new root over "/" (MS_MOVE) and chroots into it. /dev, /proc and
// /sys move along (and with /sys the cgroup2 file system the agent
// mounted at boot); /dev/pts and /dev/shm are mounted fresh.
func setupRoot(p *agent.Process, mods *moduleSet, scratch <-chan error) error {
	if err := mountRoot(p.Root, mods, scratch); err != nil {
		return err
	}
	return enterRoot(p, mods)
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

// enterRoot finishes the root mountRoot made for p (its mounts, /dev,
// /proc and /sys) and moves the agent into it.
func enterRoot(p *agent.Process, mods *moduleSet) error {
	if err := mods.Wait(); err != nil { // virtiofs, for shares
		return err
	}
	tracef("modules in")
	for _, m := range p.Mounts {
		if err := userMount(m); err != nil {
			return err
		}
	}
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		dst := newRoot + d
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("make %s in the root: %w", d, err)
		}
		if err := unix.Mount(d, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s into the root: %w", d, err)
		}
	}
	if err := unix.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root over /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	prefetch(p)
	for _, m := range []struct {
		src, dst, typ string
		flags         uintptr
		data          string
	}{
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.typ, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.typ, m.dst, err)
		}
	}
	if p.Hostname != "" {
		if err := unix.Sethostname([]byte(p.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", p.Hostname, err)
		}
	}
	if p.Root.ReadOnly {
		// The working directory is made first, as runc does, while the
		// root can still take it.
		if p.Cwd != "" {
			_ = os.MkdirAll(p.Cwd, 0o755)
		}
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("make the root read-only: %w", err)
		}
	}
	return nil
}

// prefetchMax bounds how much of the command prefetch reads ahead.
const prefetchMax = 8 << 20

// prefetch has the kernel start reading the command p will run (up to
// prefetchMax bytes) from its disk, so that the reading goes on while
// the agent finishes the root, the limits and the fork, and the exec
// finds the pages in memory. Failures are ignored: the start itself
// reports them.
func prefetch(p *agent.Process) {
	if len(p.Args) == 0 {
		return
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	path, _, err := lookPath(p.Args[0], p.Env, cwd, credOf(p))
	var st unix.Stat_t
	if err != nil || unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	go func() {
		defer unix.Close(fd)
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			_ = unix.Fadvise(fd, 0, min(st.Size, prefetchMax), unix.FADV_WILLNEED)
		}
	}()
}

// userMount makes one mount of the request inside the new root (not yet
// moved). Targets are resolved lexically under the root; the guest is the
// sandbox, so a symlink in the image can only point into the guest.
func userMount(m agent.Mount) error {
	if !path.IsAbs(m.Target) || strings.Contains(m.Target, "..") {
		return fmt.Errorf("mount target %q must be an absolute path without ..: %w", m.Target, errdefs.ErrInvalid)
	}
	dst := filepath.Join(newRoot, path.Clean(m.Target))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("mount target %s: %w", m.Target, err)
	}
	var flags uintptr
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	src, typ := m.Source, m.Type
	switch typ {
	case "bind":
		src = filepath.Join(newRoot, path.Clean("/"+m.Source))
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("make %s read-only: %w", m.Target, err)
			}
		}
		return nil
	case "virtiofs", "tmpfs", "proc", "sysfs":
	default:
		dev, err := resolveDisk(m.Source)
		if err != nil {
			return fmt.Errorf("mount %s: %w", m.Target, err)
		}
		src = dev
	}
	if err := unix.Mount(src, dst, typ, flags, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, typ, m.Target, err)
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
