package main

import (
	"context"
	"encoding/json"
	"os"

	"github.com/berth-dev/berth/internal/caps"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// cmdFeatures: print what berth-runtime implements (runtime-spec's
// features document).
func cmdFeatures(_ context.Context, _ *globals, args []string) error {
	if _, err := noArgs(args); err != nil {
		return err
	}
	yes, no := true, false
	f := features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
		MountOptions: []string{
			"async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
			"mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime",
			"nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro",
			"rprivate", "rshared", "rslave", "rro", "rw", "shared", "slave", "strictatime",
			"suid", "sync", "unbindable",
		},
		Linux: &features.Linux{
			Namespaces:   []string{"cgroup", "ipc", "mount", "network", "pid", "uts"},
			Capabilities: allCaps(),
			Cgroup:       &features.Cgroup{V1: &yes, V2: &yes, Systemd: &no, SystemdUser: &no},
			Seccomp: &features.Seccomp{
				Enabled:   &yes,
				Actions:   []string{"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG"},
				Operators: []string{"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"},
				Archs:     []string{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"},
			},
			Apparmor: &features.Apparmor{Enabled: &no},
			Selinux:  &features.Selinux{Enabled: &no},
		},
		Annotations: map[string]string{"io.berth.isolation": "container"},
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(f)
}

// allCaps names every capability berth knows.
func allCaps() []string {
	out := make([]string, 0, caps.MaxKnown+1)
	for i := 0; i <= caps.MaxKnown; i++ {
		out = append(out, caps.Name(i))
	}
	return out
}
