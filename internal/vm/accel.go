// Package vm is the host side of berth's VM engine: it chooses the
// accelerator, finds the guest kernel, assembles the guest's disks (one
// cached EROFS image per image layer, one ext4 scratch disk per instance),
// builds QEMU's command line, starts QEMU with virtiofsd for shared
// directories, and controls it over QMP.
//
// A VM's life: Start (QEMU starts paused with -S, berth connects QMP, then
// resumes the guest so no event is missed), AgentConn to talk to the guest
// agent, Wait for QEMU to end, Cleanup to remove every process, socket and
// disk the VM owns.
package vm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Accel is the hypervisor accelerator QEMU runs the guest on.
type Accel string

const (
	// AccelKVM runs guest code on the CPU's hardware virtualisation.
	AccelKVM Accel = "kvm"
	// AccelTCG is QEMU's software emulation; slow but runs anywhere.
	AccelTCG Accel = "tcg"
)

// hostFacts are what DetectAccel decides on, gathered by readHostFacts and
// injected by tests.
type hostFacts struct {
	override   string   // BERTH_ACCEL
	kvmOpenErr error    // opening /dev/kvm
	cpuVirt    string   // "vmx", "svm" or "" (from /proc/cpuinfo flags)
	kvmModules []string // kvm* entries of /sys/module
}

// DetectAccel chooses KVM where the host can run a standard guest kernel
// and TCG otherwise, and says why. KVM needs /dev/kvm to open, the CPU to
// have VT-x or AMD-V, and the host KVM not to be kvm_pvm (a paravirtual
// nested KVM that cannot run a stock kernel). BERTH_ACCEL=kvm|tcg forces
// the choice. It only opens and reads files, so it never hangs.
func DetectAccel() (Accel, string) {
	return detectAccel(readHostFacts())
}

func detectAccel(f hostFacts) (Accel, string) {
	note := ""
	switch f.override {
	case "kvm", "tcg":
		return Accel(f.override), "forced by BERTH_ACCEL=" + f.override
	case "":
	default:
		note = fmt.Sprintf(" (BERTH_ACCEL=%q ignored: not kvm or tcg)", f.override)
	}
	if f.kvmOpenErr != nil {
		return AccelTCG, fmt.Sprintf("/dev/kvm unusable: %v%s", f.kvmOpenErr, note)
	}
	for _, m := range f.kvmModules {
		if m == "kvm_pvm" {
			return AccelTCG, "host KVM is kvm_pvm, which cannot run a standard guest kernel" + note
		}
	}
	if f.cpuVirt == "" {
		return AccelTCG, "CPU has no vmx or svm flag (no hardware virtualisation)" + note
	}
	return AccelKVM, fmt.Sprintf("/dev/kvm opens and the CPU has %s%s", f.cpuVirt, note)
}

func readHostFacts() hostFacts {
	f := hostFacts{override: os.Getenv("BERTH_ACCEL")}
	if kvm, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		f.kvmOpenErr = err
	} else {
		kvm.Close()
	}
	f.cpuVirt, _ = cpuVirtFlag("/proc/cpuinfo")
	if ents, err := os.ReadDir("/sys/module"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "kvm") {
				f.kvmModules = append(f.kvmModules, e.Name())
			}
		}
	}
	return f
}

// cpuVirtFlag returns "vmx" or "svm" when the first CPU's flags have it.
func cpuVirtFlag(cpuinfo string) (string, error) {
	flags, err := cpuFlags(cpuinfo)
	for _, fl := range strings.Fields(flags) {
		if fl == "vmx" || fl == "svm" {
			return fl, nil
		}
	}
	return "", err
}

// cpuFlags returns the flags line of the first CPU in cpuinfo
// (/proc/cpuinfo).
func cpuFlags(cpuinfo string) (string, error) {
	fh, err := os.Open(cpuinfo)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if key, val, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(key) == "flags" {
			return strings.TrimSpace(val), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no flags line")
}
