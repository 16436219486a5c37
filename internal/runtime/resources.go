package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// applyExtraResources applies the linux.resources that the container
// engine does not (it applies the memory and swap limits, cpu shares,
// quota and period, pids and the device rules) to the container's cgroup,
// on cgroup v1 hosts: memory reservation, swappiness, OOM killer and
// kernel TCP limit; cpuset cpus and mems; real-time cpu period and
// runtime; block I/O (blkioWrites); huge page limits; network classes
// and priorities (on a cgroup v2 host: v2Writes). A field whose
// controller or control file this host lacks is refused rather than
// silently ignored: the OCI runtime spec wants an error for a value that
// cannot be applied.
func applyExtraResources(cgroup string, r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	if cgroups.DetectMode() == cgroups.ModeV2 {
		w, err := v2Writes(r)
		if err != nil {
			return err
		}
		return applyV2(cgroups.Root, cgroup, w)
	}
	var w []cgWrite
	if m := r.Memory; m != nil {
		if m.Reservation != nil {
			w = append(w, cgWrite{"memory", "memory.soft_limit_in_bytes", strconv.FormatInt(*m.Reservation, 10), nil})
		}
		if m.Swappiness != nil {
			if *m.Swappiness > 100 {
				return fmt.Errorf("memory swappiness %d: want 0 to 100: %w", *m.Swappiness, errdefs.ErrInvalid)
			}
			w = append(w, cgWrite{"memory", "memory.swappiness", strconv.FormatUint(*m.Swappiness, 10), nil})
		}
		if m.DisableOOMKiller != nil && *m.DisableOOMKiller {
			w = append(w, cgWrite{"memory", "memory.oom_control", "1", nil})
		}
		// memory.kernel is ignored, as the runtime spec allows: kernel
		// memory limits are gone since Linux 5.4 (writes are accepted and
		// dropped) and do not exist on cgroup v2.
		if m.KernelTCP != nil {
			w = append(w, cgWrite{"memory", "memory.kmem.tcp.limit_in_bytes", strconv.FormatInt(*m.KernelTCP, 10), nil})
		}
	}
	if c := r.CPU; c != nil {
		if c.Cpus != "" {
			w = append(w, cgWrite{"cpuset", "cpuset.cpus", c.Cpus, nil})
		}
		if c.Mems != "" {
			w = append(w, cgWrite{"cpuset", "cpuset.mems", c.Mems, nil})
		}
		if c.RealtimePeriod != nil {
			w = append(w, cgWrite{"cpu", "cpu.rt_period_us", strconv.FormatUint(*c.RealtimePeriod, 10), nil})
		}
		if c.RealtimeRuntime != nil {
			w = append(w, cgWrite{"cpu", "cpu.rt_runtime_us", strconv.FormatInt(*c.RealtimeRuntime, 10), nil})
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
			return fmt.Errorf("linux.resources.hugepageLimits: page size %q: want e.g. 2MB or 1GB: %w", h.Pagesize, errdefs.ErrInvalid)
		}
		w = append(w, cgWrite{"hugetlb", "hugetlb." + h.Pagesize + ".limit_in_bytes", strconv.FormatUint(h.Limit, 10), nil})
	}
	if n := r.Network; n != nil {
		if n.ClassID != nil {
			w = append(w, cgWrite{"net_cls", "net_cls.classid", strconv.FormatUint(uint64(*n.ClassID), 10), nil})
		}
		for _, p := range n.Priorities {
			w = append(w, cgWrite{"net_prio", "net_prio.ifpriomap", fmt.Sprintf("%s %d", p.Name, p.Priority), nil})
		}
	}
	mode := cgroups.DetectMode()
	if len(w) == 0 {
		return nil
	}
	if mode != cgroups.ModeV1 && mode != cgroups.ModeHybrid {
		return fmt.Errorf("linux.resources: %s needs cgroups, and this host has %s: %w", w[0].file, mode, errdefs.ErrNotSupported)
	}
	mounts, err := v1Mounts()
	if err != nil {
		return err
	}
	for _, x := range w {
		mnt, ok := mounts[x.controller]
		if !ok {
			return fmt.Errorf("linux.resources: %s: the %s cgroup controller is not mounted: %w", x.file, x.controller, errdefs.ErrNotSupported)
		}
		if x.file == "" { // the first of alts that this kernel has
			for _, f := range x.alts {
				if _, err := os.Stat(filepath.Join(mnt, cgroup, f)); err == nil {
					x.file = f
					break
				}
			}
			if x.file == "" {
				return fmt.Errorf("linux.resources: %s %s: the kernel has no such control (no I/O scheduler with weights): %w", x.alts[0], x.value, errdefs.ErrNotSupported)
			}
		}
		p := filepath.Join(mnt, cgroup, x.file)
		if err := writeControl(p, x.value); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("linux.resources: %s %s: the kernel has no such control: %w", x.file, x.value, errdefs.ErrNotSupported)
			}
			return fmt.Errorf("linux.resources: %s %s: %w", x.file, x.value, unwrap(err))
		}
	}
	return nil
}

// cgWrite is one value for one control file of a v1 controller; with
// file empty, the first of alts that exists.
type cgWrite struct {
	controller, file, value string
	alts                    []string
}

// blkioWrites are the block I/O settings for cgroup v1's blkio
// controller: proportional weights (CFQ's blkio.weight, or BFQ's
// blkio.bfq.weight; 0 means unset, as Docker always sends one), CFQ's
// leaf weights, and throttling per device (blkio.throttle.*), one line
// "MAJOR:MINOR VALUE" per device.
func blkioWrites(b *specs.LinuxBlockIO) []cgWrite {
	var w []cgWrite
	weight := func(v uint16, files ...string) {
		w = append(w, cgWrite{controller: "blkio", value: strconv.FormatUint(uint64(v), 10), alts: files})
	}
	if nonZero(b.Weight) {
		weight(*b.Weight, "blkio.weight", "blkio.bfq.weight")
	}
	if nonZero(b.LeafWeight) {
		weight(*b.LeafWeight, "blkio.leaf_weight")
	}
	for _, d := range b.WeightDevice {
		if d.Weight != nil {
			w = append(w, cgWrite{controller: "blkio", value: fmt.Sprintf("%d:%d %d", d.Major, d.Minor, *d.Weight), alts: []string{"blkio.weight_device", "blkio.bfq.weight_device"}})
		}
		if d.LeafWeight != nil {
			w = append(w, cgWrite{controller: "blkio", value: fmt.Sprintf("%d:%d %d", d.Major, d.Minor, *d.LeafWeight), alts: []string{"blkio.leaf_weight_device"}})
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
			w = append(w, cgWrite{"blkio", t.file, fmt.Sprintf("%d:%d %d", d.Major, d.Minor, d.Rate), nil})
		}
	}
	return w
}

// v1Mounts maps each mounted cgroup v1 controller to its mount point.
func v1Mounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || b[0] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(b[2], ",") {
			if _, seen := out[opt]; !seen {
				out[opt] = a[4]
			}
		}
	}
	return out, sc.Err()
}

func nonZero(p *uint16) bool { return p != nil && *p != 0 }
