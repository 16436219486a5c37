package main

import (
	"fmt"

	"github.com/berth-dev/berth/internal/instance"
)

// cmdPause freezes the workload of each instance named: a container's
// processes through its cgroup's freezer, a VM's vCPUs through QEMU.
func cmdPause(g *globals, args []string) error {
	return pauseVerb(g, "pause", args, true)
}

// cmdUnpause thaws what pause froze.
func cmdUnpause(g *globals, args []string) error {
	return pauseVerb(g, "unpause", args, false)
}

func pauseVerb(g *globals, name string, args []string, on bool) error {
	fs := newFlags(name)
	if err := parse(fs, args); err != nil {
		return err
	}
	return eachInstance(g, fs.Args(), func(st *instance.Store, in *instance.Instance) error {
		return setPaused(st, in, on)
	})
}

// setPaused pauses (on) or resumes in and records it. The record's
// transition is checked first (a created, stopped or already paused
// instance cannot be paused) and again when it is written, in case the
// workload ended meanwhile.
func setPaused(st *instance.Store, in *instance.Instance, on bool) error {
	to := instance.Running
	if on {
		to = instance.Paused
	}
	if err := instance.CanMove(in.Status, to); err != nil {
		return fmt.Errorf("instance %s: %w", in.ShortID(), err)
	}
	h, err := handleOf(st, in)
	if err != nil {
		return err
	}
	if on {
		err = h.Pause()
	} else {
		err = h.Resume()
	}
	if err != nil {
		return err
	}
	_, err = st.Update(in.ID, func(x *instance.Instance) error {
		if err := instance.CanMove(x.Status, to); err != nil {
			return fmt.Errorf("instance %s: %w", in.ShortID(), err)
		}
		x.Status = to
		return nil
	})
	return err
}
