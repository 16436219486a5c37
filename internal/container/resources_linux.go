package container

import (
	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// ResourcesOf converts OCI resources to the limits the cgroup managers
// apply (memory, cpu, pids, device rules), as Create does for a spec's;
// devices are the spec's linux.devices, which the device rules allow.
func ResourcesOf(r *specs.LinuxResources, devices []specs.LinuxDevice) cgroups.Resources {
	return resourcesOf(&specs.Spec{Linux: &specs.Linux{Resources: r, Devices: devices}})
}

// cgroupResources are the limits a container's cgroup is made with: the
// spec's, but with initSlot (an init that stays) one more task than
// its pids limit, for the init's thread that forks the workload and
// stays in the cgroup's pids hierarchy (leaveCgroup). An init that
// becomes the workload holds no place of its own.
func cgroupResources(s *specs.Spec, initSlot bool) cgroups.Resources {
	r := resourcesOf(s)
	if r.Pids > 0 && initSlot {
		r.Pids++
	}
	return r
}

// pidsLimit is the spec's pids limit, 0 for none.
func pidsLimit(s *specs.Spec) int64 {
	if s.Linux == nil || s.Linux.Resources == nil || s.Linux.Resources.Pids == nil || s.Linux.Resources.Pids.Limit == nil || *s.Linux.Resources.Pids.Limit < 0 {
		return 0
	}
	return *s.Linux.Resources.Pids.Limit
}

// resourcesOf converts the spec's resources to the cgroup package's.
func resourcesOf(s *specs.Spec) cgroups.Resources {
	var r cgroups.Resources
	if s.Linux == nil || s.Linux.Resources == nil {
		return r
	}
	lr := s.Linux.Resources
	if m := lr.Memory; m != nil {
		if m.Limit != nil {
			r.Memory = *m.Limit
		}
		if m.Swap != nil {
			r.MemorySwap = *m.Swap
		}
	}
	if c := lr.CPU; c != nil {
		if c.Quota != nil {
			r.CPUQuota = *c.Quota
		}
		if c.Period != nil {
			r.CPUPeriod = *c.Period
		}
		if c.Shares != nil {
			r.CPUShares = *c.Shares
		}
	}
	if p := lr.Pids; p != nil && p.Limit != nil {
		r.Pids = *p.Limit
	}
	r.Devices = deviceRules(lr.Devices, s.Linux.Devices)
	return r
}

// standardDevices are allowed after a spec's device rules, as runc does:
// null, zero, full, random, urandom, tty, console, ptmx and the
// pseudo-terminals. The runtime spec wants them supplied, and a workload
// whose /dev/null is denied cannot even start a shell pipeline.
var standardDevices = []cgroups.DeviceRule{
	charDev(1, 3), charDev(1, 5), charDev(1, 7), charDev(1, 8), charDev(1, 9),
	charDev(5, 0), charDev(5, 1), charDev(5, 2), charDev(136, -1),
}

func charDev(major, minor int64) cgroups.DeviceRule {
	return cgroups.DeviceRule{Allow: true, Type: 'c', Major: major, Minor: minor, Access: "rwm"}
}

// deviceRules are a spec's device cgroup rules in order, then allow rules
// for the standard devices and for the spec's linux.devices. A spec
// without rules leaves device access alone (nil). A malformed rule is
// passed on for the cgroup manager to refuse.
func deviceRules(rules []specs.LinuxDeviceCgroup, devices []specs.LinuxDevice) []cgroups.DeviceRule {
	if len(rules) == 0 {
		return nil
	}
	num := func(p *int64) int64 {
		if p == nil || *p < 0 {
			return -1
		}
		return *p
	}
	out := make([]cgroups.DeviceRule, 0, len(rules)+len(standardDevices)+len(devices))
	for _, d := range rules {
		typ := byte('a')
		if d.Type != "" {
			typ = d.Type[0]
			if len(d.Type) != 1 {
				typ = '?' // refused by the manager
			}
		}
		access := d.Access
		if access == "" {
			access = "rwm"
		}
		out = append(out, cgroups.DeviceRule{Allow: d.Allow, Type: typ, Major: num(d.Major), Minor: num(d.Minor), Access: access})
	}
	out = append(out, standardDevices...)
	for _, d := range devices {
		switch d.Type {
		case "c", "u":
			out = append(out, cgroups.DeviceRule{Allow: true, Type: 'c', Major: d.Major, Minor: d.Minor, Access: "rwm"})
		case "b":
			out = append(out, cgroups.DeviceRule{Allow: true, Type: 'b', Major: d.Major, Minor: d.Minor, Access: "rwm"})
		}
	}
	return out
}
