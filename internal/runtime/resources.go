package runtime

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// applyExtraResources applies the linux.resources that the container
// engine does not (it applies the memory and swap limits, cpu shares,
// quota and period, pids and the device rules) to the container's cgroup:
// on cgroup v1 hosts (v1Writes) memory reservation, swappiness, OOM killer
// and kernel TCP limit; cpuset cpus and mems; real-time cpu period and
// runtime; block I/O (blkioWrites); huge page limits; network classes
// and priorities (on a cgroup v2 host: v2Writes). A field whose
// controller or control file this host lacks is refused rather than
// silently ignored: the OCI runtime spec wants an error for a value that
// cannot be applied.
func applyExtraResources(cgroup string, r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	writes := v1Writes
	if cgroups.DetectMode() == cgroups.ModeV2 {
		writes = v2Writes
	}
	w, err := writes(r)
	if err != nil {
		return err
	}
	if err := cgroups.WriteControls(cgroup, w); err != nil {
		return fmt.Errorf("linux.resources: %w", err)
	}
	return nil
}

// v1Writes maps the resources applyExtraResources handles to a cgroup v1
// host's control files.
func v1Writes(r *specs.LinuxResources) ([]cgroups.Control, error) {
	var w []cgroups.Control
	if m := r.Memory; m != nil {
		if m.Reservation != nil {
			w = append(w, cgroups.Control{Controller: "memory", File: "memory.soft_limit_in_bytes", Value: strconv.FormatInt(*m.Reservation, 10)})
		}
		if m.Swappiness != nil {
			if *m.Swappiness > 100 {
				return nil, fmt.Errorf("memory swappiness %d: want 0 to 100: %w", *m.Swappiness, errdefs.ErrInvalid)
			}
			w = append(w, cgroups.Control{Controller: "memory", File: "memory.swappiness", Value: strconv.FormatUint(*m.Swappiness, 10)})
		}
		if m.DisableOOMKiller != nil && *m.DisableOOMKiller {
			w = append(w, cgroups.Control{Controller: "memory", File: "memory.oom_control", Value: "1"})
		}
		// memory.kernel is ignored, as the runtime spec allows: kernel
		// memory limits are gone since Linux 5.4 (writes are accepted and
		// dropped) and do not exist on cgroup v2.
		if m.KernelTCP != nil {
			w = append(w, cgroups.Control{Controller: "memory", File: "memory.kmem.tcp.limit_in_bytes", Value: strconv.FormatInt(*m.KernelTCP, 10)})
		}
	}
	if c := r.CPU; c != nil {
		if c.Cpus != "" {
			w = append(w, cgroups.Control{Controller: "cpuset", File: "cpuset.cpus", Value: c.Cpus})
		}
		if c.Mems != "" {
			w = append(w, cgroups.Control{Controller: "cpuset", File: "cpuset.mems", Value: c.Mems})
		}
		if c.RealtimePeriod != nil {
			w = append(w, cgroups.Control{Controller: "cpu", File: "cpu.rt_period_us", Value: strconv.FormatUint(*c.RealtimePeriod, 10)})
		}
		if c.RealtimeRuntime != nil {
			w = append(w, cgroups.Control{Controller: "cpu", File: "cpu.rt_runtime_us", Value: strconv.FormatInt(*c.RealtimeRuntime, 10)})
		}
	}
	// A weight of 0 is "not set" (v1 weights run from 10 to 1000): Docker
	// always sends one.
	if b := r.BlockIO; b != nil {
		w = append(w, blkioWrites(b)...)
	}
	for _, h := range r.HugepageLimits {
		// hugetlb.2MB.limit_in_bytes: the page size as the kernel names it.
		if h.Pagesize == "" || strings.ContainsAny(h.Pagesize, "/. ") {
			return nil, fmt.Errorf("linux.resources.hugepageLimits: page size %q: want e.g. 2MB or 1GB: %w", h.Pagesize, errdefs.ErrInvalid)
		}
		w = append(w, cgroups.Control{Controller: "hugetlb", File: "hugetlb." + h.Pagesize + ".limit_in_bytes", Value: strconv.FormatUint(h.Limit, 10)})
	}
	if n := r.Network; n != nil {
		if n.ClassID != nil {
			w = append(w, cgroups.Control{Controller: "net_cls", File: "net_cls.classid", Value: strconv.FormatUint(uint64(*n.ClassID), 10)})
		}
		for _, p := range n.Priorities {
			w = append(w, cgroups.Control{Controller: "net_prio", File: "net_prio.ifpriomap", Value: fmt.Sprintf("%s %d", p.Name, p.Priority)})
		}
	}
	return w, nil
}

// blkioWrites are the block I/O settings for cgroup v1's blkio
// controller: proportional weights (CFQ's blkio.weight, or BFQ's
// blkio.bfq.weight; 0 means unset, as Docker always sends one), CFQ's
// leaf weights, and throttling per device (blkio.throttle.*), one line
// "MAJOR:MINOR VALUE" per device.
func blkioWrites(b *specs.LinuxBlockIO) []cgroups.Control {
	var w []cgroups.Control
	weight := func(v uint16, files ...string) {
		w = append(w, cgroups.Control{Controller: "blkio", Value: strconv.FormatUint(uint64(v), 10), Alts: files})
	}
	if nonZero(b.Weight) {
		weight(*b.Weight, "blkio.weight", "blkio.bfq.weight")
	}
	if nonZero(b.LeafWeight) {
		weight(*b.LeafWeight, "blkio.leaf_weight")
	}
	for _, d := range b.WeightDevice {
		if d.Weight != nil {
			w = append(w, cgroups.Control{Controller: "blkio", Value: fmt.Sprintf("%d:%d %d", d.Major, d.Minor, *d.Weight), Alts: []string{"blkio.weight_device", "blkio.bfq.weight_device"}})
		}
		if d.LeafWeight != nil {
			w = append(w, cgroups.Control{Controller: "blkio", Value: fmt.Sprintf("%d:%d %d", d.Major, d.Minor, *d.LeafWeight), Alts: []string{"blkio.leaf_weight_device"}})
		}
	}
	for _, t := range []struct {
		file string
		devs []specs.LinuxThrottleDevice
	}{
		{"blkio.throttle.read_bps_device", b.ThrottleReadBpsDevice},
		{"blkio.throttle.write_bps_device", b.ThrottleWriteBpsDevice},
		{"blkio.throttle.read_iops_device", b.ThrottleReadIOPSDevice},
		{"blkio.throttle.write_iops_device", b.ThrottleWriteIOPSDevice},
	} {
		for _, d := range t.devs {
			w = append(w, cgroups.Control{Controller: "blkio", File: t.file, Value: fmt.Sprintf("%d:%d %d", d.Major, d.Minor, d.Rate)})
		}
	}
	return w
}

func nonZero(p *uint16) bool { return p != nil && *p != 0 }
