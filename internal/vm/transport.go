package vm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Transport is the channel between berth and the guest agent. Both carry
// the same framed protocol (internal/agent).
type Transport string

const (
	// TransportSerial is a virtio-serial port whose QEMU chardev is a
	// unix socket berth connects to. It needs nothing of the host.
	TransportSerial Transport = "virtio-serial"
	// TransportVsock is an AF_VSOCK stream: the agent listens on
	// AgentVsockPort, berth connects to the guest's CID. It needs the
	// host's vhost-vsock (/dev/vhost-vsock).
	TransportVsock Transport = "vsock"
)

// AgentVsockPort is the vsock port the guest agent listens on; the
// kernel command line carries it as berth.vsock=AgentVsockPort.
const AgentVsockPort = 1024

// VhostVsock is the host device QEMU's vhost-vsock-pci needs.
const VhostVsock = "/dev/vhost-vsock"

// DetectTransport chooses vsock where /dev/vhost-vsock opens read-write
// and virtio-serial otherwise, and says why. BERTH_VM_TRANSPORT=serial
// forces virtio-serial; BERTH_VM_TRANSPORT=vsock forces vsock and fails
// where the host has no vhost-vsock.
func DetectTransport() (Transport, string, error) {
	var openErr error
	if f, err := os.OpenFile(VhostVsock, os.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		openErr = err
	} else {
		f.Close()
	}
	return detectTransport(os.Getenv("BERTH_VM_TRANSPORT"), openErr)
}

func detectTransport(override string, vhostErr error) (Transport, string, error) {
	switch override {
	case "serial", "virtio-serial":
		return TransportSerial, "forced by BERTH_VM_TRANSPORT=" + override, nil
	case "vsock":
		if vhostErr != nil {
			return "", "", fmt.Errorf("BERTH_VM_TRANSPORT=vsock, but this host has no usable vhost-vsock (%v; modprobe vhost_vsock, or unset BERTH_VM_TRANSPORT for virtio-serial): %w", vhostErr, errdefs.ErrUnavailable)
		}
		return TransportVsock, "forced by BERTH_VM_TRANSPORT=vsock", nil
	case "":
	default:
		return "", "", fmt.Errorf("BERTH_VM_TRANSPORT=%q: want serial or vsock: %w", override, errdefs.ErrInvalid)
	}
	if vhostErr != nil {
		return TransportSerial, fmt.Sprintf("%s unusable: %v", VhostVsock, vhostErr), nil
	}
	return TransportVsock, VhostVsock + " opens", nil
}

// TransportModules are the guest kernel modules of a transport's guest
// driver (the agent inserts them, and what they depend on, first).
func TransportModules(t Transport) []string {
	if t == TransportVsock {
		return []string{"vmw_vsock_virtio_transport"}
	}
	return []string{"virtio_console"}
}

// CIDs a guest may have: 0 to 2 are the hypervisor, local and host
// addresses, 2^32-1 is VMADDR_CID_ANY.
const (
	minGuestCID = 3
	maxGuestCID = 1<<32 - 2
)

// cidTries bounds the random CIDs tried before giving up.
const cidTries = 64

// reserveCID opens /dev/vhost-vsock and claims a guest CID unique on
// the host with the kernel's VHOST_VSOCK_SET_GUEST_CID, which fails with
// EADDRINUSE for a CID another VM holds. QEMU inherits the descriptor
// (vhost-vsock-pci,vhostfd=N,guest-cid=CID sets the same CID on the same
// device again, which the kernel allows), so no other process can take
// the CID between the choice and QEMU's start; it is freed when QEMU
// exits and the descriptor is closed.
func reserveCID() (*os.File, uint32, error) {
	f, err := os.OpenFile(VhostVsock, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("vsock: %v: %w", err, errdefs.ErrUnavailable)
	}
	for range cidTries {
		cid := uint32(minGuestCID + rand.Int64N(maxGuestCID-minGuestCID+1))
		err = setGuestCID(f, cid)
		if err == nil {
			return f, cid, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	f.Close()
	return nil, 0, fmt.Errorf("vsock: set guest CID on %s: %v: %w", VhostVsock, err, errdefs.ErrUnavailable)
}

// vsockRetry is how long dialVsock waits between attempts while the
// guest's agent is not listening yet.
const vsockRetry = 20 * time.Millisecond

// dialVsock connects to port on the guest cid, retrying while the guest
// is not up (its device not started: the connect times out) or its
// agent not listening (the guest resets the connection), until ctx ends.
func dialVsock(ctx context.Context, cid, port uint32) (*os.File, error) {
	return dialVsockWith(ctx, cid, port, connectVsock)
}

func dialVsockWith(ctx context.Context, cid, port uint32, connect func(cid, port uint32) (*os.File, error)) (*os.File, error) {
	for {
		f, err := connect(cid, port)
		if err == nil {
			return f, nil
		}
		switch {
		case errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.ECONNREFUSED),
			errors.Is(err, unix.ETIMEDOUT), errors.Is(err, unix.ENODEV),
			errors.Is(err, unix.EHOSTUNREACH), errors.Is(err, unix.EINTR):
		default:
			return nil, fmt.Errorf("vsock connect to %d:%d: %w", cid, port, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("vsock connect to %d:%d: %w (last: %v)", cid, port, ctx.Err(), err)
		case <-time.After(vsockRetry):
		}
	}
}

// connectVsock makes one connection attempt. The returned file is
// non-blocking, so reads, writes and Close go through Go's poller.
func connectVsock(cid, port uint32) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("vsock:%d:%d", cid, port)), nil
}
