// Command testinit is the guest /init of internal/vm's tests: it prints a
// marker on the console, optionally exercises the VM's devices (disks,
// virtio-fs share, agent port), and powers the guest off. The kernel
// command line's berth.test= picks what it does.
package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	mode := "poweroff"
	cmdline, _ := os.ReadFile("/proc/cmdline")
	if len(cmdline) == 0 {
		os.MkdirAll("/proc", 0o755)
		syscall.Mount("proc", "/proc", "proc", 0, "")
		cmdline, _ = os.ReadFile("/proc/cmdline")
	}
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "berth.test="); ok {
			mode = v
		}
	}
	fmt.Println("BERTH-TESTINIT-STARTED mode=" + mode)
	switch mode {
	case "devices":
		if err := devices(); err != nil {
			fmt.Println("BERTH-TESTINIT-ERROR", err)
		}
	case "hang":
		for {
			time.Sleep(time.Hour)
		}
	case "exit":
		os.Exit(3) // init exits: the kernel panics, then resets
	}
	fmt.Println("BERTH-TESTINIT-POWEROFF")
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
}

var modules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
	"virtio_pci", "virtio_blk", "virtio_console", "libcrc32c", "erofs", "fuse", "virtiofs"}

func devices() error {
	for _, m := range modules {
		f, err := os.Open("/modules/" + m + ".ko")
		if err != nil {
			return err
		}
		empty := []byte{0}
		_, _, e := syscall.Syscall(313 /* finit_module on amd64 */, f.Fd(), uintptr(unsafe.Pointer(&empty[0])), 0)
		f.Close()
		if e != 0 && e != syscall.EEXIST {
			return fmt.Errorf("insmod %s: %v", m, e)
		}
	}
	os.MkdirAll("/dev", 0o755)
	if err := syscall.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
		return fmt.Errorf("devtmpfs: %v", err)
	}
	os.MkdirAll("/sys", 0o755)
	if err := syscall.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("sysfs: %v", err)
	}
	for _, d := range []string{"/layer", "/scratch", "/share"} {
		os.MkdirAll(d, 0o755)
	}
	// Devices appear asynchronously after the driver binds.
	for i := 0; i < 500 && !exists("/dev/vdb"); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Mount("/dev/vda", "/layer", "erofs", syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount erofs: %v", err)
	}
	b, err := os.ReadFile("/layer/hello")
	if err != nil {
		return err
	}
	fmt.Printf("BERTH-LAYER %s\n", strings.TrimSpace(string(b)))
	if err := syscall.Mount("/dev/vdb", "/scratch", "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount scratch: %v", err)
	}
	if err := os.WriteFile("/scratch/x", []byte("scratch-ok"), 0o644); err != nil {
		return err
	}
	fmt.Println("BERTH-SCRATCH ok")
	if err := syscall.Mount("share", "/share", "virtiofs", 0, ""); err != nil {
		return fmt.Errorf("mount virtiofs: %v", err)
	}
	b, err = os.ReadFile("/share/in")
	if err != nil {
		return err
	}
	fmt.Printf("BERTH-SHARE %s\n", strings.TrimSpace(string(b)))
	if err := os.WriteFile("/share/out", []byte("from-guest\n"), 0o644); err != nil {
		return err
	}
	syscall.Unmount("/share", 0)
	if err := syscall.Mount("ro", "/share", "virtiofs", 0, ""); err != nil {
		return fmt.Errorf("mount ro virtiofs: %v", err)
	}
	err = os.WriteFile("/share/denied", []byte("x"), 0o644)
	fmt.Printf("BERTH-ROSHARE write-error=%v\n", err != nil)
	// The agent port: wait for the host's line, answer it.
	port := ""
	for i := 0; i < 500 && port == ""; i++ {
		ents, _ := os.ReadDir("/sys/class/virtio-ports")
		for _, e := range ents {
			name, _ := os.ReadFile("/sys/class/virtio-ports/" + e.Name() + "/name")
			if strings.TrimSpace(string(name)) == "agent" {
				port = "/dev/" + e.Name()
			}
		}
		if port == "" {
			time.Sleep(10 * time.Millisecond)
		}
	}
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("agent port %q: %v", port, err)
	}
	buf := make([]byte, 64)
	n, err := f.Read(buf)
	if err != nil {
		return fmt.Errorf("agent port read: %v", err)
	}
	fmt.Fprintf(f, "guest got %s", buf[:n])
	f.Close()
	fmt.Println("BERTH-AGENT ok")
	return nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
