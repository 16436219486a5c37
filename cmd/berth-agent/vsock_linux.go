package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// channel is the agent's transport, as the kernel command line names it:
// berth.vsock=PORT for vsock, else the virtio-serial port berth.port=NAME
// (default "agent").
type channel struct {
	vsock bool
	port  uint32 // vsock port
	name  string // virtio-serial port name
}

func (c channel) String() string {
	if c.vsock {
		return "vsock port " + strconv.FormatUint(uint64(c.port), 10)
	}
	return "virtio-serial port " + c.name
}

// vsockModules and serialModules drive each channel (on PCI); boot
// inserts those of its channel, and what they depend on, first, and
// never the other channel's.
var (
	serialModules = []string{"virtio_pci", "virtio_console"}
	vsockModules  = []string{"virtio_pci", "vmw_vsock_virtio_transport"}
)

// modules returns the channel's driver modules and the other channel's,
// which the agent leaves out.
func (c channel) modules() (first, skip []string) {
	if c.vsock {
		return vsockModules, []string{"virtio_console"}
	}
	return serialModules, []string{"vmw_vsock_virtio_transport"}
}

// parseChannel reads the agent's channel from the kernel command line.
func parseChannel(cmdline string) (channel, error) {
	if v := cmdlineValue(cmdline, "berth.vsock", ""); v != "" {
		p, err := strconv.ParseUint(v, 10, 32)
		if err != nil || p == unix.VMADDR_PORT_ANY {
			return channel{}, fmt.Errorf("kernel command line: berth.vsock=%q: want a vsock port number: %w", v, errdefs.ErrInvalid)
		}
		return channel{vsock: true, port: uint32(p)}, nil
	}
	return channel{name: cmdlineValue(cmdline, "berth.port", "agent")}, nil
}

// open opens the channel and returns once the host is connected (vsock)
// or the port is there (virtio-serial, where the host may come later).
func (c channel) open() (io.ReadWriteCloser, error) {
	if c.vsock {
		return acceptVsock(c.port)
	}
	return openPort(c.name)
}

// acceptVsock waits for the guest's vsock device, listens on port (any
// CID: the guest's own) and returns the first connection, the host's.
// The listener is closed then: the agent serves one host connection.
func acceptVsock(port uint32) (io.ReadWriteCloser, error) {
	if err := waitVsockDevice(); err != nil {
		return nil, err
	}
	l, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	defer unix.Close(l)
	if err := unix.Bind(l, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		return nil, fmt.Errorf("vsock bind port %d: %w", port, err)
	}
	if err := unix.Listen(l, 1); err != nil {
		return nil, fmt.Errorf("vsock listen port %d: %w", port, err)
	}
	tracef("vsock listening")
	for {
		// Non-blocking, so the connection's reads and writes, and a
		// Close under them, go through Go's poller.
		fd, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("vsock accept on port %d: %w", port, err)
		}
		return os.NewFile(uintptr(fd), "vsock"), nil
	}
}

// waitVsockDevice waits until the virtio vsock driver has bound the
// device QEMU attached (vhost-vsock-pci), which gives the guest its CID:
// /dev/vsock says VMADDR_CID_ANY until then. It fails, with a line for
// the console, on a host that attached none.
func waitVsockDevice() error {
	deadline := time.Now().Add(deviceWait)
	for {
		cid, err := localCID()
		if err == nil && cid != unix.VMADDR_CID_ANY {
			tracef("vsock cid " + strconv.FormatUint(uint64(cid), 10))
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("no guest CID")
			}
			return fmt.Errorf("no virtio vsock device (QEMU: -device vhost-vsock-pci,guest-cid=N): %v: %w", err, errdefs.ErrNotFound)
		}
		time.Sleep(devicePoll)
	}
}

// localCID is the guest's vsock CID, VMADDR_CID_ANY while it has none.
func localCID() (uint32, error) {
	f, err := os.Open("/dev/vsock")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return unix.IoctlGetUint32(int(f.Fd()), unix.IOCTL_VM_SOCKETS_GET_LOCAL_CID)
}
