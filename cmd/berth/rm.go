package main

import (
	"fmt"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
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
		// Nothing in an unreadable record can be trusted: its container's
		// cgroup (the conventional one; a VM has none on the host) is
		// destroyed and its directory removed.
		corrupt = func(st *instance.Store, id string) error {
			if err := container.Cleanup("/berth/" + id); err != nil {
				return err
			}
			return st.Remove(id)
		}
	}
	return forEachInstance(g, fs.Args(), func(st *instance.Store, in *instance.Instance) error {
		if in.Status.Active() {
			if !*force {
				return fmt.Errorf("instance %s is %s: stop it first or use rm -f: %w", in.ShortID(), in.Status, errdefs.ErrConflict)
			}
			_ = signalInstance(st, in, syscall.SIGKILL)
			if !waitStopped(st, in.ID, 10*time.Second) {
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
