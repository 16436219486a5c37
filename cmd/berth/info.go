package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/vm"
)

// hostInfo is what `berth info` reports.
type hostInfo struct {
	Version    string            `json:"version"`
	GoVersion  string            `json:"go_version"`
	Kernel     string            `json:"kernel"`
	Arch       string            `json:"arch"`
	CgroupMode cgroups.Mode      `json:"cgroup_mode"`
	Root       bool              `json:"root"`
	DataRoot   string            `json:"data_root"`
	Peers      map[string]string `json:"peers"`
	Accel      string            `json:"accelerator"`
	AccelWhy   string            `json:"accelerator_reason"`
	Transport  string            `json:"vm_transport"`
	TransWhy   string            `json:"vm_transport_reason"`
	Guest      string            `json:"guest_kernel"`
	Templates  string            `json:"vm_templates"`
	Networks   []string          `json:"networks"`
	Firewall   string            `json:"firewall"`
}

func cmdInfo(g *globals, args []string) error {
	fs := newFlags("info")
	format := fs.String("format", "", "output format: json")
	if err := parse(fs, args); err != nil {
		return err
	}
	info := hostInfo{
		Version:    version,
		GoVersion:  runtime.Version(),
		Kernel:     kernelRelease(),
		Arch:       runtime.GOARCH,
		CgroupMode: cgroups.DetectMode(),
		Root:       os.Geteuid() == 0,
		DataRoot:   g.root,
		Peers:      map[string]string{},
	}
	for _, p := range []string{"runc", "runsc", "qemu-system-x86_64", "containerd", "dockerd"} {
		if path, err := exec.LookPath(p); err == nil {
			info.Peers[p] = path
		}
	}
	accel, why := vm.DetectAccel()
	info.Accel, info.AccelWhy = string(accel), why
	if tr, why, err := vm.DetectTransport(); err != nil {
		info.Transport, info.TransWhy = "none", oneLine(err)
	} else {
		info.Transport, info.TransWhy = string(tr), why
	}
	if k, err := findKernel(g, ""); err == nil {
		info.Guest = k.Path
	} else {
		info.Guest = "none: " + oneLine(err)
	}
	if vm.TemplatesEnabled() {
		n, bytes := vm.TemplateUsage(filepath.Join(g.root, "vm"))
		info.Templates = fmt.Sprintf("on: %d saved, %d MiB (BERTH_VM_TEMPLATE=off boots every VM cold)", n, bytes>>20)
	} else {
		info.Templates = "off (BERTH_VM_TEMPLATE): every VM boots its kernel"
	}
	info.Networks, info.Firewall = networkFacts(g)
	if *format == "json" {
		return printJSON(info)
	}
	fmt.Printf("berth:        %s (%s)\n", info.Version, info.GoVersion)
	fmt.Printf("kernel:       %s %s\n", info.Kernel, info.Arch)
	fmt.Printf("cgroup mode:  %s\n", info.CgroupMode)
	fmt.Printf("root:         %v\n", info.Root)
	fmt.Printf("data root:    %s\n", info.DataRoot)
	fmt.Printf("accelerator:  %s (%s)\n", info.Accel, info.AccelWhy)
	fmt.Printf("vm transport: %s (%s)\n", info.Transport, info.TransWhy)
	fmt.Printf("guest kernel: %s\n", info.Guest)
	fmt.Printf("vm templates: %s\n", info.Templates)
	fmt.Printf("networks:     %s\n", strings.Join(info.Networks, ", "))
	fmt.Printf("firewall:     %s\n", info.Firewall)
	fmt.Printf("peers found:  %s\n", strings.Join(slices.Sorted(maps.Keys(info.Peers)), " "))
	return nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
