package vm

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vhostVsockSetGuestCID is VHOST_VSOCK_SET_GUEST_CID, _IOW(0xAF, 0x60,
// __u64) from <linux/vhost.h>.
const vhostVsockSetGuestCID = 0x4008af60

// setGuestCID sets the guest CID of a /dev/vhost-vsock descriptor. The
// ioctl reads a 64-bit CID through a pointer, which x/sys/unix has no
// helper for.
func setGuestCID(f *os.File, cid uint32) error {
	v := uint64(cid)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), vhostVsockSetGuestCID, uintptr(unsafe.Pointer(&v)))
	if errno != 0 {
		return errno
	}
	return nil
}
