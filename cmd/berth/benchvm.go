package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/internal/initramfs"
	"github.com/berth-dev/berth/internal/vm"
)

// benchVMStart times `berth run --vm --rm IMAGE /bin/true` against plain
// QEMU booting the same kernel, with the same machine type, accelerator,
// RAM and firmware, into a busybox /init that powers off at once.
func benchVMStart(g *globals, ref string, n int) (bench.Result, error) {
	guest, err := findGuest(g, "")
	if err != nil {
		return bench.Result{}, err
	}
	tmp, err := os.MkdirTemp("", "berth-bench-vm-")
	if err != nil {
		return bench.Result{}, err
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "poweroff.cpio")
	if err := poweroffInitramfs(initrd); err != nil {
		return bench.Result{}, err
	}
	qemu, _ := exec.LookPath("qemu-system-x86_64")
	cpu := "max"
	if guest.Accel == vm.AccelKVM {
		cpu = "host"
	}
	plain := []string{qemu, "-M", "q35,accel=" + string(guest.Accel), "-cpu", cpu, "-m", "256M", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "file:/dev/null",
		"-kernel", guest.Kernel.Path, "-initrd", initrd, "-append", "console=ttyS0 quiet panic=-1"}
	fw := vm.DefaultFirmware()
	if fw != "" {
		plain = append(plain, "-bios", fw) // berth's firmware, so that the ratio is berth's own cost
	}
	self, err := os.Executable()
	if err != nil {
		return bench.Result{}, err
	}
	run := []string{self, "--root", g.root, "run", "--vm", "--rm", ref, "/bin/true"}
	subjects := []bench.Subject{
		{Name: "berth run --vm --rm", Argv: run, Env: []string{"BERTH_VM_TEMPLATE=on"}},
		{Name: "plain QEMU boot+poweroff", Argv: plain},
		{Name: "berth, cold boot (no template)", Argv: run, Env: []string{"BERTH_VM_TEMPLATE=off"}},
	}
	if !vm.TemplatesEnabled() {
		subjects = subjects[:2]
		subjects[0].Env = nil
	}
	r, err := bench.Compare("vm start: run --vm --rm of /bin/true", subjects[0], subjects[1], n, subjects[2:]...)
	firmware := "QEMU's default firmware"
	if fw != "" {
		firmware = "firmware " + filepath.Base(fw)
	}
	how := "berth restores a saved booted guest (its template, made by the warm-up run); BERTH_VM_TEMPLATE=off boots cold"
	if !vm.TemplatesEnabled() {
		how = "templates off (BERTH_VM_TEMPLATE): berth boots the kernel every time"
	}
	r.Note = fmt.Sprintf("accelerator %s; same kernel, q35, 256 MiB, %s; %s; goal: ratio <= 1.10", guest.Accel, firmware, how)
	return r, err
}

// poweroffInitramfs writes an initramfs whose /init is busybox powering
// the machine off: the least a guest can do.
func poweroffInitramfs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return initramfs.Build(f, []initramfs.File{
		{Path: "bin", Dir: true, Mode: 0o755},
		{Path: "bin/busybox", SourcePath: "/bin/busybox", Mode: 0o755},
		{Path: "dev", Dir: true, Mode: 0o755},
		{Path: "dev/console", Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Path: "init", Mode: 0o755, Data: []byte("#!/bin/busybox sh\n/bin/busybox poweroff -f\n")},
	})
}

// compareResult is the main job's side-by-side view of one image run
// both ways.
type compareResult struct {
	Scenario string     `json:"scenario"`
	Rows     []modeInfo `json:"modes"`
	// FirstVMMs is the first of the two VM runs, which makes the
	// image's template when there is none.
	FirstVMMs float64 `json:"first_vm_run_ms"`
}

type modeInfo struct {
	Mode      string  `json:"mode"`
	Output    string  `json:"output"`
	Kernel    string  `json:"kernel"`
	StartMs   float64 `json:"run_ms"`
	MemoryKiB int64   `json:"idle_pss_kib"`
	Accel     string  `json:"accel,omitempty"`
	VMStart   string  `json:"vm_start,omitempty"` // template or boot
}

func (c compareResult) Print(w io.Writer) {
	fmt.Fprintf(w, "%s\n", c.Scenario)
	fmt.Fprintf(w, "  %-10s %-28s %-24s %10s %16s\n", "MODE", "OUTPUT", "KERNEL INSIDE", "RUN (ms)", "IDLE PSS (MiB)")
	for _, r := range c.Rows {
		mode := r.Mode
		if r.Accel != "" {
			mode += " (" + r.Accel + ")"
		}
		fmt.Fprintf(w, "  %-10s %-28s %-24s %10.0f %16.1f\n", mode, r.Output, r.Kernel, r.StartMs, float64(r.MemoryKiB)/1024)
	}
	for _, r := range c.Rows {
		if r.VMStart != "" {
			fmt.Fprintf(w, "  the VM started from %s; the first VM run took %.0f ms (it makes the image's template if there is none; BERTH_VM_TEMPLATE=off boots cold)\n",
				map[string]string{"template": "its template (a saved booted guest)", "boot": "a kernel boot"}[r.VMStart], c.FirstVMMs)
		}
	}
}

// benchCompare runs the image once as a container and once as a VM and
// reports output, kernel, run time and the host memory an idle instance
// holds (PSS of every host process that makes it up).
func benchCompare(g *globals, ref string) (compareResult, error) {
	self, err := os.Executable()
	if err != nil {
		return compareResult{}, err
	}
	res := compareResult{Scenario: "the same image both ways: `run --rm IMAGE sh -c 'echo hello; uname -r'`, then an idle `sleep`"}
	for _, mode := range []string{"container", "vm"} {
		args := []string{"--root", g.root, "run", "--rm"}
		if mode == "vm" {
			args = append(args, "--vm")
		}
		runs := 1
		if mode == "vm" {
			runs = 2 // the first may make the template
		}
		var out []byte
		var ms float64
		for i := 0; i < runs; i++ {
			start := time.Now()
			out, err = exec.Command(self, append(args, ref, "sh", "-c", "echo hello from $(hostname); uname -r")...).Output()
			ms = float64(time.Since(start).Microseconds()) / 1000
			if err != nil {
				return res, fmt.Errorf("%s run: %v", mode, err)
			}
			if mode == "vm" && i == 0 {
				res.FirstVMMs = ms
			}
		}
		lines := strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)
		info := modeInfo{Mode: mode, Output: lines[0], StartMs: ms}
		if len(lines) == 2 {
			info.Kernel = lines[1]
		}
		info.MemoryKiB, info.Accel, info.VMStart, err = idleFootprint(g, self, ref, mode == "vm")
		if err != nil {
			return res, err
		}
		res.Rows = append(res.Rows, info)
	}
	return res, nil
}

// idleFootprint starts a detached idle instance and sums the PSS of its
// monitor, its init or QEMU, and their descendants (workload, virtiofsd).
func idleFootprint(g *globals, self, ref string, asVM bool) (pss int64, accel, vmStart string, err error) {
	args := []string{"--root", g.root, "run", "-d"}
	if asVM {
		args = append(args, "--vm")
	}
	out, err := exec.Command(self, append(args, ref, "sleep", "1000")...).Output()
	if err != nil {
		return 0, "", "", fmt.Errorf("run -d: %v", err)
	}
	id := strings.TrimSpace(string(out))
	defer exec.Command(self, "--root", g.root, "rm", "-f", id).Run()
	time.Sleep(time.Second) // let start-up settle
	_, in, err := lookupInstance(g, id)
	if err != nil {
		return 0, "", "", err
	}
	var total int64
	for _, pid := range append([]int{in.MonitorPid}, bench.Tree(in.Pid)...) {
		if p, err := bench.PSS(pid); err == nil {
			total += p
		}
	}
	if !in.Status.Active() {
		return 0, "", "", fmt.Errorf("instance %s is %s", in.ShortID(), in.Status)
	}
	return total, in.Accel, in.VMStart, nil
}
