package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Start releases a created container's workload (the OCI "start"
// operation): startContainer hooks, the start message to the init, which
// execve's the workload, then poststart hooks. A poststart failure is
// returned but the workload keeps running, as the runtime spec says.
func (st *Store) Start(id string) error {
	s, l, err := st.loadCreated(id, (*State).Status)
	if err != nil {
		return err
	}
	defer l.Unlock()
	spec, err := st.Spec(id)
	if err != nil {
		return err
	}
	state, err := json.Marshal(s.OCI()) // startContainer hooks run in the container
	if err != nil {
		return err
	}
	d, err := os.Open(st.Dir(id))
	if err != nil {
		return fmt.Errorf("container %s: %w", id, unwrap(err))
	}
	defer d.Close()
	if err := container.StartDetached(startAddr(int(d.Fd())), state); err != nil {
		return err
	}
	os.Remove(filepath.Join(st.Dir(id), "start.sock"))
	s.Started = true
	if err := st.Save(s); err != nil {
		return err
	}
	return runHooks(spec, HookPoststart, s.OCI())
}

// Kill sends sig to the container's process, or with all to every
// process in its cgroup.
func (st *Store) Kill(id string, sig syscall.Signal, all bool) error {
	s, err := st.Load(id)
	if err != nil {
		return err
	}
	if s.Status() == Stopped {
		return fmt.Errorf("container %s is not running: %w", id, errdefs.ErrConflict)
	}
	if !all {
		if err := unix.Kill(s.Pid, sig); err != nil {
			return fmt.Errorf("container %s: kill %d: %w", id, s.Pid, err)
		}
		return nil
	}
	cg, err := cgroups.New(s.Cgroup)
	if err != nil {
		return err
	}
	pids, err := cg.Pids()
	if err != nil {
		return err
	}
	for _, p := range pids {
		unix.Kill(p, sig)
	}
	if s.Paused && (sig == unix.SIGKILL || sig == unix.SIGTERM) {
		// Frozen processes only act on the signal once thawed.
		cg.Thaw()
	}
	return nil
}

// lockForDelete locks and loads container id for Delete and DeleteVM;
// with force a container that does not exist is no error (a nil lock).
func (st *Store) lockForDelete(id string, force bool) (*Lock, *State, error) {
	l, err := st.lock(id)
	if err != nil {
		if force && errorsIsNotFound(err) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	s, err := st.Load(id)
	if err != nil {
		l.Unlock()
		return nil, nil, err
	}
	return l, s, nil
}

// Delete removes a container (the OCI "delete" operation). A running or
// paused one is refused unless force is set, in which case it is killed
// first; a created one is killed (runc does the same). Poststop hooks run
// after everything is gone. With force a missing container is not an
// error.
func (st *Store) Delete(id string, force bool) error {
	l, s, err := st.lockForDelete(id, force)
	if err != nil || l == nil {
		return err
	}
	defer l.Unlock()
	status := s.Status()
	if (status == Running || status == Paused) && !force {
		return fmt.Errorf("container %s is %s: stop it first or use --force: %w", id, status, errdefs.ErrConflict)
	}
	if err := killAll(s); err != nil {
		return err
	}
	var hookErr error
	if spec, err := st.Spec(id); err == nil {
		state := s.OCI()
		state.Status = specs.StateStopped
		state.Pid = 0
		hookErr = runHooks(spec, HookPoststop, state)
	}
	if err := os.RemoveAll(st.Dir(id)); err != nil {
		return fmt.Errorf("container %s: remove state: %w", id, unwrap(err))
	}
	return hookErr
}

// Pause freezes every process of the container.
func (st *Store) Pause(id string) error {
	return st.freeze(id, true)
}

// Resume thaws a paused container.
func (st *Store) Resume(id string) error {
	return st.freeze(id, false)
}

func (st *Store) freeze(id string, on bool) error {
	_, err := st.update(id, func(s *State) error {
		// A VM's status is its own (a created VM's owner is alive and no
		// longer berth's init, which s.Status would read as running).
		status := string(st.StateOf(s).Status)
		want := Running
		if !on {
			want = Paused
		}
		if status != want {
			return fmt.Errorf("container %s is %s, not %s: %w", id, status, want, errdefs.ErrConflict)
		}
		if err := cgroups.SetFrozen(s.Cgroup, on); err != nil {
			return err
		}
		s.Paused = on
		return nil
	})
	return err
}

// Update changes the container's resource limits. r is merged into the
// limits in force: a field that r leaves nil keeps its value.
func (st *Store) Update(id string, r *specs.LinuxResources) error {
	_, err := st.update(id, func(s *State) error {
		if s.Status() == Stopped {
			return fmt.Errorf("container %s is not running: %w", id, errdefs.ErrConflict)
		}
		merged := mergeResources(s.Resources, r)
		cg, err := cgroups.New(s.Cgroup)
		if err != nil {
			return err
		}
		var devices []specs.LinuxDevice // what the device rules allow besides
		if spec, err := st.Spec(id); err == nil && spec.Linux != nil {
			devices = spec.Linux.Devices
		}
		if err := cg.Update(container.ResourcesOf(merged, devices)); err != nil {
			return err
		}
		// What the engine does not drive (cpuset, real-time, memory
		// extras): the fields r sets, applied again.
		if err := applyExtraResources(s.Cgroup, r); err != nil {
			return err
		}
		s.Resources = merged
		return nil
	})
	return err
}

// mergeResources lays the set fields of r over cur.
func mergeResources(cur, r *specs.LinuxResources) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	if cur != nil {
		c := *cur
		out = &c
	}
	if r == nil {
		return out
	}
	if m := r.Memory; m != nil {
		if out.Memory == nil {
			out.Memory = &specs.LinuxMemory{}
		} else {
			mm := *out.Memory
			out.Memory = &mm
		}
		if m.Limit != nil {
			out.Memory.Limit = m.Limit
		}
		if m.Swap != nil {
			out.Memory.Swap = m.Swap
		}
		if m.Reservation != nil {
			out.Memory.Reservation = m.Reservation
		}
		if m.Swappiness != nil {
			out.Memory.Swappiness = m.Swappiness
		}
		if m.KernelTCP != nil {
			out.Memory.KernelTCP = m.KernelTCP
		}
		if m.DisableOOMKiller != nil {
			out.Memory.DisableOOMKiller = m.DisableOOMKiller
		}
	}
	if c := r.CPU; c != nil {
		if out.CPU == nil {
			out.CPU = &specs.LinuxCPU{}
		} else {
			cc := *out.CPU
			out.CPU = &cc
		}
		if c.Quota != nil {
			out.CPU.Quota = c.Quota
		}
		if c.Period != nil {
			out.CPU.Period = c.Period
		}
		if c.Shares != nil {
			out.CPU.Shares = c.Shares
		}
		if c.Cpus != "" {
			out.CPU.Cpus = c.Cpus
		}
		if c.Mems != "" {
			out.CPU.Mems = c.Mems
		}
		if c.RealtimePeriod != nil {
			out.CPU.RealtimePeriod = c.RealtimePeriod
		}
		if c.RealtimeRuntime != nil {
			out.CPU.RealtimeRuntime = c.RealtimeRuntime
		}
	}
	if p := r.Pids; p != nil {
		out.Pids = p
	}
	if len(r.Devices) > 0 {
		// Rules are applied in order on top of the ones in force.
		out.Devices = append(append([]specs.LinuxDeviceCgroup{}, out.Devices...), r.Devices...)
	}
	return out
}

// Stats reads the container's cgroup counters.
func (st *Store) Stats(id string) (cgroups.Stats, error) {
	s, err := st.Load(id)
	if err != nil {
		return cgroups.Stats{}, err
	}
	if s.Status() == Stopped {
		return cgroups.Stats{}, fmt.Errorf("container %s is not running: %w", id, errdefs.ErrConflict)
	}
	cg, err := cgroups.New(s.Cgroup)
	if err != nil {
		return cgroups.Stats{}, err
	}
	return cg.Stats()
}

// Pids lists the host pids of the container's processes.
func (st *Store) Pids(id string) ([]int, error) {
	s, err := st.Load(id)
	if err != nil {
		return nil, err
	}
	if s.Status() == Stopped {
		return []int{}, nil
	}
	cg, err := cgroups.New(s.Cgroup)
	if err != nil {
		return nil, err
	}
	pids, err := cg.Pids()
	if pids == nil {
		pids = []int{}
	}
	return pids, err
}

// Exec starts p in a created or running container with the container's
// own seccomp profile. The process is a child of the caller; its host pid
// is Process.Pid.
func (st *Store) Exec(ctx context.Context, id string, p *specs.Process, stdio container.Stdio) (*container.Process, error) {
	s, err := st.Load(id)
	if err != nil {
		return nil, err
	}
	if status := s.Status(); status != Running && status != Created {
		return nil, fmt.Errorf("container %s is %s: cannot exec: %w", id, status, errdefs.ErrConflict)
	}
	spec, err := st.Spec(id)
	if err != nil {
		return nil, err
	}
	return container.ExecWithSeccomp(ctx, s.Pid, s.Cgroup, p, spec.Linux.Seccomp, stdio)
}

// errorsIsNotFound reports an ErrNotFound-class error.
func errorsIsNotFound(err error) bool {
	return errors.Is(err, errdefs.ErrNotFound)
}
