package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// cmdUpdate: change a running container's limits, from --resources (a
// LinuxResources JSON file, "-" for stdin) or runc's flags.
func cmdUpdate(_ context.Context, g *globals, args []string) error {
	fs := newFlags("update")
	var resources, memory, swap, reservation, quota, period, shares, pids, cpus, mems string
	fs.StringVar(&resources, "resources", "", "LinuxResources JSON file, - for stdin")
	fs.StringVar(&resources, "r", "", "LinuxResources JSON file, - for stdin")
	fs.StringVar(&memory, "memory", "", "memory limit (bytes, or 64m)")
	fs.StringVar(&swap, "memory-swap", "", "memory+swap limit, -1 unlimited")
	fs.StringVar(&reservation, "memory-reservation", "", "memory soft limit")
	fs.StringVar(&quota, "cpu-quota", "", "CFS quota in microseconds")
	fs.StringVar(&period, "cpu-period", "", "CFS period in microseconds")
	fs.StringVar(&shares, "cpu-share", "", "CPU shares")
	fs.StringVar(&shares, "cpu-shares", "", "CPU shares")
	fs.StringVar(&pids, "pids-limit", "", "maximum number of processes")
	fs.StringVar(&cpus, "cpuset-cpus", "", "CPUs to use")
	fs.StringVar(&mems, "cpuset-mems", "", "memory nodes to use")
	fs.String("kernel-memory", "", "ignored")
	fs.String("kernel-memory-tcp", "", "ignored")
	fs.String("blkio-weight", "", "ignored")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	r := &specs.LinuxResources{}
	if resources != "" {
		var b []byte
		if resources == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(resources)
		}
		if err != nil {
			return fmt.Errorf("--resources: %w", err)
		}
		if err := json.Unmarshal(b, r); err != nil {
			return fmt.Errorf("--resources: %v: %w", err, errdefs.ErrInvalid)
		}
	}
	bytesFlag := func(name, v string) (*int64, error) {
		if v == "" {
			return nil, nil
		}
		if v == "-1" {
			n := int64(-1)
			return &n, nil
		}
		n, err := instance.ParseBytes(v)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", name, err)
		}
		return &n, nil
	}
	mem := &specs.LinuxMemory{}
	if mem.Limit, err = bytesFlag("memory", memory); err != nil {
		return err
	}
	if mem.Swap, err = bytesFlag("memory-swap", swap); err != nil {
		return err
	}
	if mem.Reservation, err = bytesFlag("memory-reservation", reservation); err != nil {
		return err
	}
	if mem.Limit != nil || mem.Swap != nil || mem.Reservation != nil {
		if r.Memory == nil {
			r.Memory = &specs.LinuxMemory{}
		}
		if mem.Limit != nil {
			r.Memory.Limit = mem.Limit
		}
		if mem.Swap != nil {
			r.Memory.Swap = mem.Swap
		}
		if mem.Reservation != nil {
			r.Memory.Reservation = mem.Reservation
		}
	}
	cpu := func() *specs.LinuxCPU {
		if r.CPU == nil {
			r.CPU = &specs.LinuxCPU{}
		}
		return r.CPU
	}
	if quota != "" {
		n, err := strconv.ParseInt(quota, 10, 64)
		if err != nil {
			return fmt.Errorf("--cpu-quota %q: %w", quota, errdefs.ErrInvalid)
		}
		cpu().Quota = &n
	}
	for _, u := range []struct {
		name, val string
		dst       **uint64
	}{{"cpu-period", period, nil}, {"cpu-share", shares, nil}} {
		if u.val == "" {
			continue
		}
		n, err := strconv.ParseUint(u.val, 10, 64)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", u.name, u.val, errdefs.ErrInvalid)
		}
		if u.name == "cpu-period" {
			cpu().Period = &n
		} else {
			cpu().Shares = &n
		}
	}
	if cpus != "" {
		cpu().Cpus = cpus
	}
	if mems != "" {
		cpu().Mems = mems
	}
	if pids != "" {
		n, err := strconv.ParseInt(pids, 10, 64)
		if err != nil {
			return fmt.Errorf("--pids-limit %q: %w", pids, errdefs.ErrInvalid)
		}
		r.Pids = &specs.LinuxPids{Limit: &n}
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	return st.Update(id, r)
}
