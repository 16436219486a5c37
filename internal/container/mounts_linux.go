package container

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountMounts makes mounts (the spec's, or those not premounted) under
// root, in order.
func mountMounts(cfg *initConfig, root string, mounts []specs.Mount) error {
	for _, m := range mounts {
		if !filepath.IsAbs(m.Destination) {
			return fmt.Errorf("mount %q: destination must be an absolute path: %w", m.Destination, errdefs.ErrInvalid)
		}
		if err := mountOne(cfg, root, m); err != nil {
			return err
		}
	}
	return nil
}

func mountOne(cfg *initConfig, root string, m specs.Mount) error {
	o := parseMountOptions(m.Type, m.Options)
	dest, err := resolveIn(root, m.Destination)
	if err != nil {
		return fmt.Errorf("mount %q: %w", m.Destination, err)
	}
	switch {
	case o.bind:
		err = mountBind(m.Source, dest, o)
	case m.Type == "sysfs" && !cfg.NewNet:
		// Without a network namespace of its own the container must not
		// get a sysfs of the host's network namespace mounted fresh: bind
		// the host's /sys instead (read-only with the options).
		o.rec = true
		err = mountBind("/sys", dest, o)
	case m.Type == "cgroup" || m.Type == "cgroup2":
		err = mountCgroups(dest, cfg.CgroupPath, o)
	default:
		if err = os.MkdirAll(dest, 0o755); err == nil {
			err = unix.Mount(m.Source, dest, m.Type, o.flags, o.data)
		}
	}
	if err != nil {
		if o.bind {
			return fmt.Errorf("mount %q on %q: %w", m.Source, m.Destination, unwrapErrno(err))
		}
		return fmt.Errorf("mount %s on %q: %w", m.Type, m.Destination, unwrapErrno(err))
	}
	for _, p := range o.propagate {
		if err := unix.Mount("", dest, "", p, ""); err != nil {
			return fmt.Errorf("mount %q: set propagation: %w", m.Destination, err)
		}
	}
	return nil
}

// mountBind binds source on dest (created like the source: a directory or
// an empty file) and applies the remountable flags (ro, nosuid, ...).
func mountBind(source, dest string, o mountOpts) error {
	fi, err := os.Stat(source)
	if err != nil {
		return err
	}
	if err := makeMountpoint(dest, fi.IsDir()); err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND)
	if o.rec {
		flags |= unix.MS_REC
	}
	if err := unix.Mount(source, dest, "", flags, ""); err != nil {
		return err
	}
	return remountBind(dest, o.flags&remountable, o.rec)
}

// remountBind applies flags to the bind mount at dest, keeping the flags
// the mount already has. For a recursive bind made read-only, the
// sub-mounts are made read-only too where the kernel can
// (mount_setattr), so "ro" means read-only all the way down.
func remountBind(dest string, flags uintptr, rec bool) error {
	if flags == 0 {
		return nil
	}
	locked, err := lockedFlags(dest)
	if err != nil {
		return err
	}
	if err := unix.Mount("", dest, "", unix.MS_BIND|unix.MS_REMOUNT|flags|locked, ""); err != nil {
		return err
	}
	if rec && flags&unix.MS_RDONLY != 0 {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		err := unix.MountSetattr(unix.AT_FDCWD, dest, unix.AT_RECURSIVE, &attr)
		if err != nil && !errors.Is(err, unix.ENOSYS) {
			return err
		}
	}
	return nil
}

// makeMountpoint creates dest as a directory or an empty file. What the
// image already has at dest is left to the mount to judge and is never
// opened: a FIFO there would block, a device could act on being opened.
func makeMountpoint(dest string, dir bool) error {
	if dir {
		return os.MkdirAll(dest, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	err := unix.Mknod(dest, unix.S_IFREG|0o644, 0)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return &os.PathError{Op: "create", Path: dest, Err: err}
	}
	return nil
}

// mountCgroups shows the container its own cgroup, read-only, at dest
// without a cgroup namespace for the init: on a unified host the
// container's cgroup2 directory is bound there; on v1 and hybrid hosts a
// tmpfs gets one bind of the container's directory per hierarchy, plus the
// host's symlinks (cpu -> cpu,cpuacct).
func mountCgroups(dest, cgPath string, o mountOpts) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	ro := mountOpts{flags: unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC}
	for _, m := range mounts {
		if m.point == "/sys/fs/cgroup" && m.fstype == "cgroup2" {
			return mountBind(filepath.Join(m.point, cgPath), dest, ro)
		}
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dest, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
		return err
	}
	// The binds are made read-only all at once at the end when the
	// kernel can (mount_setattr), one at a time otherwise.
	var binds []string
	for _, m := range mounts {
		if filepath.Dir(m.point) != "/sys/fs/cgroup" || m.root != "/" {
			continue
		}
		src := filepath.Join(m.point, cgPath)
		if _, err := os.Stat(src); err != nil {
			continue // a hierarchy the container is not placed in (name=systemd, ...)
		}
		target := filepath.Join(dest, filepath.Base(m.point))
		if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return err
		}
		binds = append(binds, target)
	}
	if ents, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, e := range ents {
			if e.Type()&fs.ModeSymlink == 0 {
				continue
			}
			if target, err := os.Readlink(filepath.Join("/sys/fs/cgroup", e.Name())); err == nil && !strings.Contains(target, "/") {
				os.Symlink(target, filepath.Join(dest, e.Name()))
			}
		}
	}
	if o.flags&remountable&^ro.flags == 0 {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}
		if unix.MountSetattr(unix.AT_FDCWD, dest, unix.AT_RECURSIVE, &attr) == nil {
			return nil
		}
		// Before Linux 5.12, or refused (an outer seccomp profile): one
		// at a time, as before.
	}
	for _, b := range binds {
		if err := remountBind(b, ro.flags, false); err != nil {
			return err
		}
	}
	return unix.Mount("", dest, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|o.flags&remountable, "mode=755")
}

type mountInfo struct {
	root, point, fstype string
}

// cgroupMounts lists the cgroup file systems of this mount namespace.
func cgroupMounts() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 1 || (b[0] != "cgroup" && b[0] != "cgroup2") {
			continue
		}
		out = append(out, mountInfo{root: unescapeMount(a[3]), point: unescapeMount(a[4]), fstype: b[0]})
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
