//go:build linux

package container

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setCredential sets groups, gid and uid on this thread only (raw system
// calls, not Go's all-threads wrappers): the execve from this thread is
// what matters, and the other threads die with it.
func setCredential(c credential) error {
	var gp unsafe.Pointer
	if len(c.Groups) > 0 {
		gp = unsafe.Pointer(&c.Groups[0])
	}
	if c.NoSetGroups {
		// Nothing to do: checkSetgroups made sure no group was asked for.
	} else if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(c.Groups)), uintptr(gp), 0); e != 0 {
		return fmt.Errorf("setgroups %v: %w", c.Groups, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(c.GID), uintptr(c.GID), uintptr(c.GID)); e != 0 {
		return fmt.Errorf("setgid %d: %w", c.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(c.UID), uintptr(c.UID), uintptr(c.UID)); e != 0 {
		return fmt.Errorf("setuid %d: %w", c.UID, e)
	}
	return nil
}

// setProcessName names the process (its comm, what ps shows): a stage
// executed through /proc/self/fd/N would otherwise be called "N".
func setProcessName(name string) {
	b := append([]byte(name), 0)
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0)
}
