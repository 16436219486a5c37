package runtime

// The OCI verbs. Each is one method of Store for both isolations: it
// locks and loads the record, checks the transition with the state
// machine (instance.CanMove), has the isolation's backend do what only
// it knows how to, runs the hooks and writes the new status.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// backend is what differs between a container (containerBackend) and a
// VM (vmBackend) under the OCI verbs.
type backend interface {
	// started reports whether the workload of a record that says
	// created has started all the same (reconcile's fact).
	started(s *State) bool
	// start releases a created workload through its start listener at
	// addr and returns once it runs (spec is the bundle's).
	start(s *State, spec *specs.Spec, addr string) error
	// kill sends sig to the workload; with all, to every host process
	// of it.
	kill(s *State, sig syscall.Signal, all bool) error
	// destroy kills whatever is left of the instance and frees what it
	// holds outside its state directory.
	destroy(s *State) error
	// pids lists the host processes of a live instance.
	pids(s *State) ([]int, error)
	// exec runs p in the instance and returns its exit status (0 with
	// Detach, once it runs).
	exec(ctx context.Context, s *State, p *specs.Process, o ExecOptions) (int, error)
	// update changes the limits in force (s.Resources with them).
	update(s *State, r *specs.LinuxResources) error
}

// backend is the one place where the isolation of a record picks the
// code that runs it.
func (st *Store) backend(s *State) backend {
	if s.Isolation == instance.IsolationVM {
		return vmBackend{dir: st.Dir(s.ID)}
	}
	return containerBackend{dir: st.Dir(s.ID)}
}

// Start releases a created container's workload (the OCI "start"
// operation): startContainer hooks, the workload, then poststart hooks.
// A poststart failure is returned but the workload keeps running, as the
// runtime spec says.
func (st *Store) Start(id string) error {
	s, l, err := st.loadLocked(id)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if err := s.can(instance.Running, ""); err != nil {
		return err
	}
	spec, err := st.Spec(id)
	if err != nil {
		return err
	}
	d, err := os.Open(st.Dir(id))
	if err != nil {
		return fmt.Errorf("container %s: %w", id, unwrap(err))
	}
	defer d.Close()
	if err := st.backend(s).start(s, spec, startAddr(int(d.Fd()))); err != nil {
		return err
	}
	os.Remove(filepath.Join(st.Dir(id), "start.sock"))
	if err := s.move(instance.Running); err != nil {
		return err
	}
	if err := st.Save(s); err != nil {
		return err
	}
	return runHooks(spec, HookPoststart, s.OCI())
}

// Kill sends sig to the container's workload, or with all to every host
// process of it (a VM's owner relays the signal into the guest, whose
// processes are not the host's). A paused one is thawed for SIGKILL and
// SIGTERM: frozen processes only act on them once thawed.
func (st *Store) Kill(id string, sig syscall.Signal, all bool) error {
	s, err := st.Load(id)
	if err != nil {
		return err
	}
	if err := s.can(instance.Stopped, "be killed"); err != nil {
		return err
	}
	if err := st.backend(s).kill(s, sig, all); err != nil {
		return err
	}
	if s.Status == instance.Paused && (sig == unix.SIGKILL || sig == unix.SIGTERM) && s.Cgroup != "" {
		cgroups.SetFrozen(s.Cgroup, false)
	}
	return nil
}

// signalPid sends sig to the workload's own process.
func signalPid(s *State, sig syscall.Signal) error {
	if err := unix.Kill(s.Pid, sig); err != nil {
		return fmt.Errorf("container %s: kill %d: %w", s.ID, s.Pid, err)
	}
	return nil
}

// Delete removes a container (the OCI "delete" operation). A running or
// paused one is refused unless force is set, in which case it is killed
// first; a created one is killed (runc does the same). Poststop hooks run
// after everything is gone. With force a missing container is not an
// error.
func (st *Store) Delete(id string, force bool) error {
	s, l, err := st.loadLocked(id)
	if err != nil {
		if force && errorsIsNotFound(err) {
			return nil
		}
		return err
	}
	defer l.Unlock()
	if !force {
		if err := s.need("be deleted", instance.Created, instance.Stopped); err != nil {
			return fmt.Errorf("%w: stop it first or use --force", err)
		}
	}
	if err := st.backend(s).destroy(s); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	s.Status = instance.Stopped
	var hookErr error
	if spec, err := st.Spec(id); err == nil {
		hookErr = runHooks(spec, HookPoststop, s.OCI())
	}
	if err := os.RemoveAll(st.Dir(id)); err != nil {
		return fmt.Errorf("container %s: remove state: %w", id, unwrap(err))
	}
	return hookErr
}

// Pause freezes every process of a running container (a VM's cgroup
// holds QEMU: the whole guest stops).
func (st *Store) Pause(id string) error {
	return st.freeze(id, instance.Paused)
}

// Resume thaws a paused container.
func (st *Store) Resume(id string) error {
	return st.freeze(id, instance.Running)
}

func (st *Store) freeze(id string, to instance.Status) error {
	_, err := st.update(id, func(s *State) error {
		if to == instance.Running {
			if err := s.need("resume", instance.Paused); err != nil {
				return err
			}
		}
		if err := s.move(to); err != nil {
			return err
		}
		return cgroups.SetFrozen(s.Cgroup, to == instance.Paused)
	})
	return err
}

// Update changes the container's resource limits. r is merged into the
// limits in force: a field that r leaves nil keeps its value.
func (st *Store) Update(id string, r *specs.LinuxResources) error {
	_, err := st.update(id, func(s *State) error {
		if err := s.need("be updated", instance.Created, instance.Running, instance.Paused); err != nil {
			return err
		}
		return st.backend(s).update(s, r)
	})
	return err
}

// Stats reads the counters of the container's cgroup (a VM's: its owner,
// QEMU and virtiofsd).
func (st *Store) Stats(id string) (cgroups.Stats, error) {
	s, err := st.Load(id)
	if err != nil {
		return cgroups.Stats{}, err
	}
	if err := s.need("report stats", instance.Created, instance.Running, instance.Paused); err != nil {
		return cgroups.Stats{}, err
	}
	cg, err := cgroups.New(s.Cgroup)
	if err != nil {
		return cgroups.Stats{}, err
	}
	return cg.Stats()
}

// Pids lists the host pids of the container's processes (none once it
// stopped).
func (st *Store) Pids(id string) ([]int, error) {
	s, err := st.Load(id)
	if err != nil {
		return nil, err
	}
	if s.Status == instance.Stopped {
		return []int{}, nil
	}
	return st.backend(s).pids(s)
}

// ExecOptions are how an exec's process is run.
type ExecOptions struct {
	// Stdio is the process's fds 0-2 (without a terminal).
	Stdio container.Stdio
	// Detach returns once the process runs (the caller, a subreaper such
	// as the containerd shim, waits for it).
	Detach bool
	// PidFile receives the process's host pid.
	PidFile string
	// ConsoleSocket receives a terminal's master; without it the
	// terminal is relayed to Stdio.
	ConsoleSocket string
}

// Exec runs p in a created or running container and returns its exit
// status (see ExecOptions). Its host process is a child of the caller.
func (st *Store) Exec(ctx context.Context, id string, p *specs.Process, o ExecOptions) (int, error) {
	s, err := st.Load(id)
	if err != nil {
		return 125, err
	}
	if err := s.need("exec", instance.Created, instance.Running); err != nil {
		return 125, err
	}
	return st.backend(s).exec(ctx, s, p, o)
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

// errorsIsNotFound reports an ErrNotFound-class error.
func errorsIsNotFound(err error) bool {
	return errors.Is(err, errdefs.ErrNotFound)
}
