package container

import (
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// Stages run berth's own binary inside the container's namespaces. A
// process of the container that reaches a stage's /proc/PID/exe must not
// be able to write the host's binary through it (CVE-2019-5736). runc
// copies itself into a sealed memfd for every start and exec; berth
// instead executes the stage from a detached, read-only bind mount of
// its binary (open_tree + mount_setattr): /proc/PID/exe then names a
// file on a read-only mount, and opening it for writing fails with
// EROFS. Two system calls, no copy.

// readOnlySelf returns a read-only, detached view of the running binary,
// or nil where the kernel lacks open_tree (before 5.2) or mount_setattr
// (before 5.12); the stage then runs from /proc/self/exe, protected only
// by being non-dumpable.
func readOnlySelf() *os.File {
	fd, err := unix.OpenTree(unix.AT_FDCWD, reexecPath, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return nil
	}
	return os.NewFile(uintptr(fd), "berth-binary")
}

// execFromReadOnlySelf makes cmd execute berth's binary through a
// read-only view of it, passed as the next extra file. The caller closes
// the returned file once the stage has started (nil: nothing to close).
func execFromReadOnlySelf(cmd *exec.Cmd) *os.File {
	self := readOnlySelf()
	if self == nil {
		return nil
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, self)
	cmd.Path = fmt.Sprintf("/proc/self/fd/%d", 2+len(cmd.ExtraFiles))
	return self
}
