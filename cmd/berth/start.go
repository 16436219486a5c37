package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
)

func cmdStart(g *globals, args []string) error {
	fs := newFlags("start")
	boot := fs.Bool("boot", false, "start every instance a host's boot brings back: restart policy always, or unless-stopped and not stopped by the user (berth-restart.service)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *boot {
		if fs.NArg() > 0 {
			return fmt.Errorf("--boot starts the instances their policies name: want no INSTANCE: %w", errdefs.ErrInvalid)
		}
		return startAtBoot(g)
	}
	return eachInstance(g, fs.Args(), func(st *instance.Store, in *instance.Instance) error {
		return startInstance(g, st, in)
	})
}

// startInstance starts a created or stopped instance again, detached,
// under a new monitor, and waits until its workload runs or failed to
// start. An instance that runs, or that its owner is starting or
// restarting, is left as it is, as Docker leaves a running container.
func startInstance(g *globals, st *instance.Store, in *instance.Instance) error {
	var r *os.File
	spawn := func(id string) (int, error) {
		pr, pw, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		// fd 4, the cancel pipe of run -d's monitor: its end of file
		// cancels nothing.
		cr, cw, err := os.Pipe()
		if err != nil {
			pr.Close()
			pw.Close()
			return 0, err
		}
		p, err := spawnMonitor(g.root, id, monitorStart, pw, cr)
		pw.Close()
		cr.Close()
		cw.Close()
		if err != nil {
			pr.Close()
			return 0, err
		}
		pid := p.Pid
		_ = p.Release()
		r = pr
		return pid, nil
	}
	spawned, err := lifecycle.Revive(st, in.ID, spawn)
	if r != nil {
		defer r.Close()
	}
	if err != nil || !spawned {
		return err
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		return nil
	}
	if _, msg, ok := parseReport(line); ok {
		return fmt.Errorf("instance %s: %s", in.ShortID(), msg)
	}
	return fmt.Errorf("instance %s: its monitor exited before starting it", in.ShortID())
}

// startAtBoot is start --boot: after a host's boot (or whenever berth's
// processes were all ended) it starts every instance that dockerd would
// restart at its own start: restart policy always (even one the user had
// stopped), or unless-stopped that the user had not stopped. Each name is
// printed once its instance runs; failures are reported together.
func startAtBoot(g *globals) error {
	st, err := g.instanceStore()
	if err != nil {
		return err
	}
	list, err := st.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, in := range list {
		p := in.RestartPolicy
		if in.Unreadable || p == nil || !(p.Name == instance.RestartAlways ||
			p.Name == instance.RestartUnlessStopped && !in.StoppedByUser) {
			continue
		}
		if err := startInstance(g, st, in); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(in.Name)
	}
	return errors.Join(errs...)
}

func cmdRestart(g *globals, args []string) error {
	fs, grace, err := parseGrace("restart", args)
	if err != nil {
		return err
	}
	return eachInstance(g, fs.Args(), func(st *instance.Store, in *instance.Instance) error {
		if err := lifecycle.Stop(st, in, grace); err != nil {
			return err
		}
		cur, err := st.Get(in.ID)
		if err != nil {
			return err
		}
		return startInstance(g, st, cur)
	})
}
