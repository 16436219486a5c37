package main

import (
	"fmt"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
)

func cmdRm(g *globals, args []string) error {
	fs := newFlags("rm")
	force := fs.Bool("f", false, "kill a running instance first")
	fs.BoolVar(force, "force", false, "kill a running instance first")
	if err := parse(fs, args); err != nil {
		return err
	}
	var corrupt func(*instance.Store, string) error
	if *force {
		corrupt = removeCorrupt
	}
	return forEachInstance(g, fs.Args(), func(st *instance.Store, in *instance.Instance) error {
		// One its owner is starting or restarting counts as running.
		owned := instance.Alive(in.MonitorPid, in.MonStart) && (in.Restarting || in.Status == instance.Created)
		if in.Status.Active() || owned {
			if !*force {
				status := string(in.Status)
				if in.Restarting {
					status = "restarting"
				}
				return fmt.Errorf("instance %s is %s: stop it first or use rm -f: %w", in.ShortID(), status, errdefs.ErrConflict)
			}
			_ = lifecycle.Kill(st, in, syscall.SIGKILL)
			if !lifecycle.WaitStopped(st, in.ID, 10*time.Second) {
				return fmt.Errorf("instance %s did not stop after SIGKILL", in.ShortID())
			}
		}
		if in.Cgroup != "" {
			if err := container.Cleanup(in.Cgroup); err != nil {
				return err
			}
		}
		return st.Remove(in.ID)
	}, corrupt)
}

// removeCorrupt ends and removes an instance whose record cannot be read.
// Nothing in the record can be trusted, so what is left of the instance
// is found by what it holds (instance.Remnants): the processes of its
// instance's host cgroup (the conventional one: a container's, or a VM's QEMU)
// and its init, the QEMU and virtiofsd whose sockets are in its
// directory, its monitor. The workload's processes are killed and the
// cgroup goes; the owner, which then ends by itself, is killed only when
// it does not. The directory goes last, once nothing uses it.
func removeCorrupt(st *instance.Store, id string) error {
	cg := "/berth/" + id
	var members []int
	if m, err := cgroups.New(cg); err == nil {
		members, _ = m.Pids()
	}
	var workload, owners []instance.Remnant
	for _, r := range instance.Remnants(st.Dir(id), []string{monitorVerb, id}, members) {
		if r.Owner {
			owners = append(owners, r)
		} else {
			workload = append(workload, r)
			r.Kill()
		}
	}
	if err := container.Cleanup(cg); err != nil {
		return err
	}
	if !remnantsGone(workload, 10*time.Second) {
		return fmt.Errorf("instance %.12s: its processes did not end after SIGKILL", id)
	}
	if !remnantsGone(owners, 10*time.Second) {
		for _, r := range owners {
			r.Kill()
		}
		if !remnantsGone(owners, 10*time.Second) {
			return fmt.Errorf("instance %.12s: its owner did not end after SIGKILL", id)
		}
	}
	return st.Remove(id)
}

// remnantsGone waits up to timeout for every process of rs to end.
func remnantsGone(rs []instance.Remnant, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		alive := false
		for _, r := range rs {
			alive = alive || r.Alive()
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
