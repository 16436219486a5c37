package vm

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/initramfs"
	"github.com/berth-dev/berth/internal/testutil"
)

func TestDetectTransport(t *testing.T) {
	missing := &fs.PathError{Op: "open", Path: VhostVsock, Err: fs.ErrNotExist}
	for _, tc := range []struct {
		name     string
		override string
		vhostErr error
		want     Transport
		reason   string // or the error's text
		err      error
	}{
		{"vhost-vsock", "", nil, TransportVsock, "/dev/vhost-vsock opens", nil},
		{"no vhost-vsock", "", missing, TransportSerial, "/dev/vhost-vsock unusable", nil},
		{"forced serial", "serial", nil, TransportSerial, "BERTH_VM_TRANSPORT=serial", nil},
		{"forced virtio-serial", "virtio-serial", nil, TransportSerial, "BERTH_VM_TRANSPORT=virtio-serial", nil},
		{"forced vsock", "vsock", nil, TransportVsock, "BERTH_VM_TRANSPORT=vsock", nil},
		{"forced vsock, none", "vsock", missing, "", "BERTH_VM_TRANSPORT=vsock, but this host has no usable vhost-vsock", errdefs.ErrUnavailable},
		{"bad override", "vsok", nil, "", `BERTH_VM_TRANSPORT="vsok"`, errdefs.ErrInvalid},
	} {
		got, why, err := detectTransport(tc.override, tc.vhostErr)
		if tc.err != nil {
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.reason) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: error %v, want one line ~%q (%v)", tc.name, err, tc.reason, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want || !strings.Contains(why, tc.reason) {
			t.Errorf("%s: detectTransport = %s, %q, %v; want %s, ~%q", tc.name, got, why, err, tc.want, tc.reason)
		}
	}
}

func hostHasVhostVsock() bool {
	f, err := os.OpenFile(VhostVsock, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// On this host the environment decides as detectTransport says.
func TestDetectTransportHost(t *testing.T) {
	t.Setenv("BERTH_VM_TRANSPORT", "")
	tr, why, err := DetectTransport()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]Transport{true: TransportVsock, false: TransportSerial}[hostHasVhostVsock()]; tr != want {
		t.Errorf("DetectTransport = %s (%s), want %s", tr, why, want)
	}
	t.Logf("transport %s: %s", tr, why)
	t.Setenv("BERTH_VM_TRANSPORT", "serial")
	if tr, _, err := DetectTransport(); tr != TransportSerial || err != nil {
		t.Errorf("forced serial: %s, %v", tr, err)
	}
	t.Setenv("BERTH_VM_TRANSPORT", "vsock")
	tr, _, err = DetectTransport()
	if hostHasVhostVsock() {
		if tr != TransportVsock || err != nil {
			t.Errorf("forced vsock: %s, %v", tr, err)
		}
	} else if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("forced vsock without vhost-vsock: %s, %v", tr, err)
	}
}

func TestCommandLineVsock(t *testing.T) {
	cfg := Config{
		ID: "v", Dir: "/d", Kernel: Kernel{Path: "/k"}, Accel: AccelKVM,
		Transport: TransportVsock, GuestCID: 4242, Append: []string{"berth.trace=1"},
	}
	got := strings.Join(CommandLine(cfg), " ")
	for _, want := range []string{
		" -device vhost-vsock-pci,id=vsock0,guest-cid=4242,vhostfd=4",
		" -append console=ttyS0 quiet panic=-1 berth.vsock=1024 berth.trace=1 ",
		" -chardev socket,id=qmp,fd=3,",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("vsock command line lacks %q: %s", want, got)
		}
	}
	for _, not := range []string{"virtio-serial", "virtserialport", "id=agent", "berth.port="} {
		if strings.Contains(got, not) {
			t.Errorf("vsock command line has %q: %s", not, got)
		}
	}
	if got := KernelCmdline(Config{Transport: TransportSerial}); got != "console=ttyS0 quiet panic=-1 berth.port=agent" {
		t.Errorf("serial kernel command line %q", got)
	}
}

// Each transport's guest carries its own driver and not the other's;
// the vsock modules come with their dependencies, in order.
func TestGuestModulesVsock(t *testing.T) {
	for _, tc := range []struct {
		t        Transport
		has, not string
	}{{TransportVsock, "vmw_vsock_virtio_transport", "virtio_console"}, {TransportSerial, "virtio_console", "vmw_vsock_virtio_transport"}, {"", "virtio_console", "vmw_vsock_virtio_transport"}} {
		mods := guestModules(tc.t, true, false)
		if !slices.Contains(mods, tc.has) || slices.Contains(mods, tc.not) || !slices.Contains(mods, "virtiofs") {
			t.Errorf("%q: modules %v", tc.t, mods)
		}
	}
	var dir string
	for _, d := range []string{os.Getenv("BERTH_KERNEL"), "/var/lib/berth/kernel"} {
		if k, err := FindKernel(d); d != "" && err == nil && k.Modules != "" {
			dir = k.Modules
			break
		}
	}
	if dir == "" {
		testutil.Missing(t, "needs a guest kernel: set BERTH_KERNEL or run scripts/fetch-kernel.sh")
	}
	agentBin := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agentBin, []byte("\x7fELF fake"), 0o755)
	files, err := initramfs.AgentImage(agentBin, dir, guestModules(TransportVsock, false, false))
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, f := range files {
		if f.Path != initramfs.ModulesList {
			continue
		}
		for _, l := range strings.Split(strings.TrimSpace(string(f.Data)), "\n") {
			order = append(order, strings.TrimSuffix(filepath.Base(strings.Fields(l)[0]), ".ko"))
		}
	}
	want := []string{"virtio_ring", "virtio", "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"}
	last := -1
	for _, m := range want {
		i := slices.Index(order, m)
		if i < 0 || i < last {
			t.Fatalf("vsock guest modules %v: want %v in that order", order, want)
		}
		last = i
	}
	if slices.Contains(order, "virtio_console") {
		t.Errorf("vsock guest carries virtio_console: %v", order)
	}
}

// Asking for vsock on a host without vhost-vsock fails with one line
// before QEMU starts, and leaves nothing in the VM's directory.
func TestStartVsockWithoutVhost(t *testing.T) {
	if hostHasVhostVsock() {
		t.Skip("this host has /dev/vhost-vsock")
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "keep-ran")
	qemu := filepath.Join(dir, "keep-qemu")
	os.WriteFile(qemu, []byte("#!/bin/sh\ntouch "+marker+"\nsleep 60\n"), 0o755)
	kernel := filepath.Join(dir, "keep-vmlinuz")
	os.WriteFile(kernel, []byte("not used"), 0o644)
	scratch := filepath.Join(dir, "scratch.img")
	os.WriteFile(scratch, nil, 0o644)
	_, err := Start(context.Background(), Config{ID: "vs", Dir: dir, Kernel: Kernel{Path: kernel}, Scratch: scratch, QEMU: qemu, Transport: TransportVsock})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), VhostVsock) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Start = %v, want one line naming %s", err, VhostVsock)
	}
	t.Logf("error: %v", err)
	if _, err := os.Stat(marker); err == nil {
		t.Error("QEMU was started")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "keep-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// dialVsock retries while the guest is not up or not listening, stops
// at other errors and when its context ends.
func TestDialVsockRetries(t *testing.T) {
	var tries int
	want, _ := os.Open(os.DevNull)
	defer want.Close()
	flaky := func(cid, port uint32) (*os.File, error) {
		if cid != 7 || port != AgentVsockPort {
			t.Errorf("connect to %d:%d", cid, port)
		}
		tries++
		switch tries {
		case 1:
			return nil, unix.ETIMEDOUT // the guest's device not started
		case 2, 3:
			return nil, unix.ECONNRESET // the agent not listening yet
		}
		return want, nil
	}
	f, err := dialVsockWith(context.Background(), 7, AgentVsockPort, flaky)
	if err != nil || f != want || tries != 4 {
		t.Fatalf("dial = %v, %v after %d tries", f, err, tries)
	}
	refused := func(cid, port uint32) (*os.File, error) { return nil, unix.EACCES }
	if _, err := dialVsockWith(context.Background(), 7, 1, refused); !errors.Is(err, unix.EACCES) {
		t.Errorf("EACCES: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	never := func(cid, port uint32) (*os.File, error) { return nil, unix.ECONNRESET }
	if _, err := dialVsockWith(ctx, 7, 1, never); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("deadline: %v", err)
	}
}
