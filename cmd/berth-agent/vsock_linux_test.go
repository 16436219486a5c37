package main

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	hostvm "github.com/berth-dev/berth/internal/vm"
)

func TestParseChannel(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    channel
	}{
		{"console=ttyS0 quiet panic=-1 berth.port=agent", channel{name: "agent"}},
		{"console=ttyS0 berth.port=ctl\n", channel{name: "ctl"}},
		{"console=ttyS0", channel{name: "agent"}},
		{"console=ttyS0 berth.vsock=1024 berth.trace=1\n", channel{vsock: true, port: 1024}},
		{"berth.port=agent berth.vsock=7", channel{vsock: true, port: 7}},
	} {
		got, err := parseChannel(tc.cmdline)
		if err != nil || got != tc.want {
			t.Errorf("parseChannel(%q) = %+v, %v; want %+v", tc.cmdline, got, err, tc.want)
		}
	}
	for _, bad := range []string{"berth.vsock=x", "berth.vsock=-1", "berth.vsock=4294967295", "berth.vsock=4294967296"} {
		if _, err := parseChannel(bad); !errors.Is(err, errdefs.ErrInvalid) || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseChannel(%q) = %v, want one line, invalid", bad, err)
		}
	}
}

// The host's kernel command line and module choice are what the agent
// reads, for both transports.
func TestChannelFromHost(t *testing.T) {
	ch, err := parseChannel(hostvm.KernelCmdline(hostvm.Config{Transport: hostvm.TransportVsock}))
	if err != nil || !ch.vsock || ch.port != hostvm.AgentVsockPort {
		t.Errorf("vsock: %+v, %v", ch, err)
	}
	ch, err = parseChannel(hostvm.KernelCmdline(hostvm.Config{}))
	if err != nil || ch.vsock || ch.name != hostvm.AgentPort {
		t.Errorf("virtio-serial: %+v, %v", ch, err)
	}
	for _, tc := range []struct {
		t  hostvm.Transport
		ch channel
	}{{hostvm.TransportVsock, channel{vsock: true}}, {hostvm.TransportSerial, channel{}}} {
		first, _ := tc.ch.modules()
		for _, m := range hostvm.TransportModules(tc.t) {
			if !slices.Contains(first, m) {
				t.Errorf("%s: the host packs %s, the agent does not insert it first (%v)", tc.t, m, first)
			}
		}
	}
}

func TestSelectModules(t *testing.T) {
	mods := []module{
		{name: "virtio_ring"}, {name: "virtio", deps: []string{"virtio_ring"}},
		{name: "virtio_pci", deps: []string{"virtio", "virtio_ring"}},
		{name: "virtio_blk", deps: []string{"virtio", "virtio_ring"}},
		{name: "virtio_console", deps: []string{"virtio", "virtio_ring"}},
		{name: "vsock"}, {name: "vmw_vsock_virtio_transport_common", deps: []string{"vsock"}},
		{name: "vmw_vsock_virtio_transport", deps: []string{"virtio", "vmw_vsock_virtio_transport_common", "virtio_ring", "vsock"}},
		{name: "overlay"},
	}
	names := func(ms []module) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.name)
		}
		return strings.Join(s, " ")
	}
	_, skip := channel{}.modules()
	if got, want := names(selectModules(mods, skip)), "virtio_ring virtio virtio_pci virtio_blk virtio_console overlay"; got != want {
		t.Errorf("virtio-serial guest inserts %s, want %s", got, want)
	}
	_, skip = channel{vsock: true}.modules()
	if got, want := names(selectModules(mods, skip)), "virtio_ring virtio virtio_pci virtio_blk vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport overlay"; got != want {
		t.Errorf("vsock guest inserts %s, want %s", got, want)
	}
	if got := names(selectModules(mods, nil)); got != names(mods) {
		t.Errorf("nothing skipped: %s", got)
	}
}

// localCID reads /dev/vsock as the agent does to wait for its device;
// where this machine has a vsock transport of its own it answers.
func TestLocalCID(t *testing.T) {
	if _, err := os.Stat("/dev/vsock"); err != nil {
		t.Skip("needs /dev/vsock (the vsock module)")
	}
	cid, err := localCID()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("local CID %d (%d: none)", cid, uint32(unix.VMADDR_CID_ANY))
	if cid == unix.VMADDR_CID_ANY {
		return
	}
	if cid == unix.VMADDR_CID_HYPERVISOR {
		t.Fatalf("local CID %d is the hypervisor's, never a local one", cid)
	}
	// A CID that is really this machine's can be bound.
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("vsock socket: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: cid, Port: unix.VMADDR_PORT_ANY}); err != nil {
		t.Errorf("bind to the local CID %d: %v", cid, err)
	}
}
