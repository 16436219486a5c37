package main

import (
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
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
		if on {
			return lifecycle.Pause(st, in)
		}
		return lifecycle.Resume(st, in)
	})
}
