package runtime

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
)

// v2Writes maps the resources applyExtraResources handles to a cgroup v2
// (unified) host's files, as runc does: memory reservation to memory.low;
// cpuset cpus and mems; block I/O weights to io.weight (or BFQ's
// io.bfq.weight; v1's 10-1000 scaled to 1-10000) and throttles to io.max;
// huge pages to hugetlb.<size>.max. What v2 has no control for
// (swappiness, the OOM-killer switch, kernel TCP memory, real-time CPU
// time, CFQ leaf weights, network classes and priorities) is refused.
func v2Writes(r *specs.LinuxResources) ([]cgroups.Control, error) {
	var w []cgroups.Control
	none := func(field string) error {
		return fmt.Errorf("linux.resources.%s: cgroup v2 has no such control: %w", field, errdefs.ErrNotSupported)
	}
	if m := r.Memory; m != nil {
		if m.Reservation != nil {
			w = append(w, cgroups.Control{Controller: "memory", File: "memory.low", Value: strconv.FormatInt(*m.Reservation, 10)})
		}
		switch {
		case m.Swappiness != nil:
			return nil, none("memory.swappiness")
		case m.DisableOOMKiller != nil && *m.DisableOOMKiller:
			return nil, none("memory.disableOOMKiller")
		case m.KernelTCP != nil:
			return nil, none("memory.kernelTCP")
		}
	}
	if c := r.CPU; c != nil {
		if c.Cpus != "" {
			w = append(w, cgroups.Control{Controller: "cpuset", File: "cpuset.cpus", Value: c.Cpus})
		}
		if c.Mems != "" {
			w = append(w, cgroups.Control{Controller: "cpuset", File: "cpuset.mems", Value: c.Mems})
		}
		if c.RealtimePeriod != nil || c.RealtimeRuntime != nil {
			return nil, none("cpu.realtimePeriod/realtimeRuntime")
		}
	}
	if b := r.BlockIO; b != nil {
		weight := func(v uint16) string { return strconv.FormatUint(1+(uint64(v)-10)*9999/990, 10) }
		if nonZero(b.Weight) {
			if *b.Weight < 10 || *b.Weight > 1000 {
				return nil, fmt.Errorf("linux.resources.blockIO.weight %d: want 10 to 1000: %w", *b.Weight, errdefs.ErrInvalid)
			}
			w = append(w, cgroups.Control{Controller: "io", Value: "default " + weight(*b.Weight), Alts: []string{"io.weight", "io.bfq.weight"}})
		}
		if nonZero(b.LeafWeight) {
			return nil, none("blockIO.leafWeight")
		}
		for _, d := range b.WeightDevice {
			if d.LeafWeight != nil {
				return nil, none("blockIO.weightDevice.leafWeight")
			}
			if d.Weight != nil {
				w = append(w, cgroups.Control{Controller: "io", Value: fmt.Sprintf("%d:%d %s", d.Major, d.Minor, weight(*d.Weight)), Alts: []string{"io.weight", "io.bfq.weight"}})
			}
		}
		for _, t := range []struct {
			key  string
			devs []specs.LinuxThrottleDevice
		}{
			{"rbps", b.ThrottleReadBpsDevice}, {"wbps", b.ThrottleWriteBpsDevice},
			{"riops", b.ThrottleReadIOPSDevice}, {"wiops", b.ThrottleWriteIOPSDevice},
		} {
			for _, d := range t.devs {
				w = append(w, cgroups.Control{Controller: "io", File: "io.max", Value: fmt.Sprintf("%d:%d %s=%d", d.Major, d.Minor, t.key, d.Rate)})
			}
		}
	}
	for _, h := range r.HugepageLimits {
		if h.Pagesize == "" || strings.ContainsAny(h.Pagesize, "/. ") {
			return nil, fmt.Errorf("linux.resources.hugepageLimits: page size %q: want e.g. 2MB or 1GB: %w", h.Pagesize, errdefs.ErrInvalid)
		}
		w = append(w, cgroups.Control{Controller: "hugetlb", File: "hugetlb." + h.Pagesize + ".max", Value: strconv.FormatUint(h.Limit, 10)})
	}
	if n := r.Network; n != nil && (n.ClassID != nil || len(n.Priorities) > 0) {
		return nil, none("network")
	}
	return w, nil
}
