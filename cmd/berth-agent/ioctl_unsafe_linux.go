package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlBytes is ioctl(fd, req, arg) with arg a pointer to the first byte
// of a non-empty buf, for structures the unix package has no call for.
func ioctlBytes(fd int, req uint, buf []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	return nil
}
