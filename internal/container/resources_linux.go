package container

import (
	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// ResourcesOf converts OCI resources to the limits the cgroup managers
// apply (memory, cpu, pids), as Create does for a spec's.
func ResourcesOf(r *specs.LinuxResources) cgroups.Resources {
	return resourcesOf(&specs.Spec{Linux: &specs.Linux{Resources: r}})
}
