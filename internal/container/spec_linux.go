package container

import (
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/caps"
	"github.com/berth-dev/berth/internal/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultSpec is what `berth run` starts from, Docker's defaults: the pid,
// mount, uts, ipc, network and cgroup namespaces; /proc, /dev, /dev/pts,
// /dev/shm (64 MiB), /dev/mqueue, /sys and /sys/fs/cgroup read-only;
// runc's masked and read-only paths; Docker's default capabilities;
// no_new_privs; the default seccomp profile; RLIMIT_NOFILE 1048576 (or the
// host's hard limit when lower); hostname id; root as the user, cwd / and
// PATH the usual default. The caller fills in Args, Env, User, Cwd, Root,
// mounts and resources.
func DefaultSpec(id string) *specs.Spec {
	capSet := caps.Default()
	nofile := nofileCeiling(1 << 20)
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: id,
		Root:     &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Args: []string{"sh"},
			Env:  []string{"PATH=" + defaultPath},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  capSet,
				Effective: append([]string(nil), capSet...),
				Permitted: append([]string(nil), capSet...),
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofile, Soft: nofile}},
			NoNewPrivileges: true,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro", "nosuid", "noexec", "nodev"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=67108864"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace},
				{Type: specs.CgroupNamespace},
			},
			MaskedPaths: []string{
				"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
				"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
				"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
				"/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
			Seccomp: seccomp.Default(),
		},
	}
}

// nofileCeiling returns want, lowered to what this process may set: the
// kernel's fs.nr_open with CAP_SYS_RESOURCE (which may raise a hard
// limit), its own hard limit otherwise.
func nofileCeiling(want uint64) uint64 {
	limit := uint64(0)
	if hasSysResource() {
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			limit, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		}
	}
	if limit == 0 {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
			limit = rl.Max
		}
	}
	if limit > 0 && limit < want {
		return limit
	}
	return want
}

// hasSysResource reports whether this thread holds CAP_SYS_RESOURCE, which
// some hosts (this one's sandboxes among them) leave out even for root.
func hasSysResource() bool {
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:\t"); ok {
			eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && eff&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}
