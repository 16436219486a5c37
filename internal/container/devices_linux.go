package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// defaultDevices are the nodes every container's /dev gets.
var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

// devLinks are /dev's usual symlinks.
var devLinks = [][2]string{
	{"/proc/self/fd", "/dev/fd"},
	{"/proc/self/fd/0", "/dev/stdin"},
	{"/proc/self/fd/1", "/dev/stdout"},
	{"/proc/self/fd/2", "/dev/stderr"},
	{"pts/ptmx", "/dev/ptmx"},
}

// populateDev fills the container's /dev (a tmpfs the spec mounted):
// device nodes and symlinks. /dev/console is bound to the terminal's
// slave later (bindConsole), once the container's devpts is its /dev/pts.
// A path that a bind mount of the spec provides is left alone: there the
// files are the host's (-v DIR:/dev, -v FILE:/dev/zero), and the bound
// file stands for the device, as with runc.
func populateDev(root string, mounts []specs.Mount, extra []specs.LinuxDevice) error {
	for _, d := range append(append([]specs.LinuxDevice{}, defaultDevices...), extra...) {
		if onBind(mounts, d.Path) {
			continue
		}
		if err := makeDevice(root, d); err != nil {
			return fmt.Errorf("device %q: %w", d.Path, unwrapErrno(err))
		}
	}
	links := devLinks
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "/dev/core"})
	}
	for _, l := range links {
		if onBind(mounts, l[1]) {
			continue
		}
		dst, err := resolveIn(root, l[1])
		if err != nil {
			return err
		}
		if err := os.Symlink(l[0], dst); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("symlink %q: %w", l[1], unwrapErrno(err))
		}
	}
	return nil
}

// makeDevice creates one node; where mknod is not allowed it binds the
// host's node instead.
func makeDevice(root string, d specs.LinuxDevice) error {
	dst, err := resolveIn(root, d.Path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	var mode uint32
	switch d.Type {
	case "c", "u":
		mode = unix.S_IFCHR
	case "b":
		mode = unix.S_IFBLK
	case "p":
		mode = unix.S_IFIFO
	default:
		return fmt.Errorf("unknown device type %q", d.Type)
	}
	perm := uint32(0o666)
	if d.FileMode != nil {
		perm = uint32(*d.FileMode) & 0o7777
	}
	os.Remove(dst)
	err = unix.Mknod(dst, mode|perm, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor))))
	if errors.Is(err, unix.EPERM) {
		if err := makeMountpoint(dst, false); err != nil {
			return err
		}
		return unix.Mount(d.Path, dst, "", unix.MS_BIND, "")
	}
	if err != nil {
		return err
	}
	if d.UID != nil || d.GID != nil {
		uid, gid := -1, -1
		if d.UID != nil {
			uid = int(*d.UID)
		}
		if d.GID != nil {
			gid = int(*d.GID)
		}
		return os.Lchown(dst, uid, gid)
	}
	return nil
}

// onBind reports whether the container path p is, or lies under, a bind
// mount of the spec's: the last mount in the spec's order at p or above
// it, the one on top once all are made.
func onBind(mounts []specs.Mount, p string) bool {
	p = filepath.Clean(p)
	bind := false
	for _, m := range mounts {
		d := filepath.Clean(m.Destination)
		if d == p || d == "/" || strings.HasPrefix(p, d+"/") {
			bind = parseMountOptions(m.Type, m.Options).bind
		}
	}
	return bind
}
