package container

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// A spec without a mount namespace asks for the container to share the
// host's. runc then makes its mounts (the root bind, /proc, /dev, ...)
// in the host's mount table, changes the propagation of the host's /
// and chroots. berth never mounts anything in the host's namespace: the
// init is cloned into a scratch mount namespace, builds the container's
// tree there as for any container (pivot_root included), then takes a
// detached copy of that tree (open_tree OPEN_TREE_CLONE|AT_RECURSIVE),
// moves its thread back into the host's mount namespace and chroots into
// the copy. The container's process is then in the host's mount
// namespace (its /proc/PID/ns/mnt is the host's) with a root that no
// mount table lists; the scratch namespace dies with the init's other
// threads, and the copy with the last process rooted in it. The host's
// mount table never changes. The difference with runc: mounts the host
// makes later do not appear under the container's root, and the
// workload cannot mount on its own root (it is not in a namespace).

// hostMountNSFD is the host's mount namespace in an init with HostMount
// (see Create).
const hostMountNSFD = 4

// detachRoot copies the mount tree at / (the container's, after
// pivot_root) and moves the calling thread into the host's mount
// namespace rooted in the copy. It returns the copy's fd (close-on-exec),
// which another thread that forks the workload hands to rootInHost.
func detachRoot() (int, error) {
	tree, err := unix.OpenTree(unix.AT_FDCWD, "/", unix.OPEN_TREE_CLONE|unix.AT_RECURSIVE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("host mount namespace: copy the container's mounts: %w", err)
	}
	if err := rootInHost(tree); err != nil {
		unix.Close(tree)
		return -1, err
	}
	return tree, nil
}

// rootInHost moves the calling (locked) thread into the host's mount
// namespace with tree as its root and working directory. The thread first
// gets an fs_struct of its own: setns into a mount namespace refuses a
// shared one, and the chroot must not move the init's other threads.
func rootInHost(tree int) error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("host mount namespace: unshare fs: %w", err)
	}
	if err := unix.Setns(hostMountNSFD, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("host mount namespace: setns: %w", err)
	}
	if err := unix.Fchdir(tree); err != nil {
		return fmt.Errorf("host mount namespace: enter the container's tree: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("host mount namespace: chroot: %w", err)
	}
	return unix.Chdir("/")
}
