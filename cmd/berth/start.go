package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
	"github.com/berth-dev/berth/internal/project"
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
	// Every compose project's supervisor comes back too: it brings its
	// replicas back to their counts.
	if ps, err := project.Open(g.root); err == nil {
		names, _ := ps.List()
		for _, name := range names {
			if err := startSupervisor(g, ps, name); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Println("project " + name)
		}
	}
	return errors.Join(errs...)
}

func cmdRestart(g *globals, args []string) error {
	fs, grace, err := parseGrace("restart", args)
	if err != nil {
		return err
	}
	if len(fs.Args()) == 1 {
		// A compose service's name: its replicas, one after the other.
		if _, _, err := lookupInstance(g, fs.Arg(0)); errors.Is(err, errdefs.ErrNotFound) {
			if p, perr := serviceProject(g, "", fs.Arg(0)); perr == nil {
				return restartService(g, p, fs.Arg(0), grace)
			}
		}
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

// restartService restarts the replicas of service svc of project p one
// after the other, so the service keeps answering.
func restartService(g *globals, p *project.Project, svc string, grace time.Duration) error {
	ins, err := projectInstances(g, p.Name)
	if err != nil {
		return err
	}
	st, err := g.instanceStore()
	if err != nil {
		return err
	}
	sort.Slice(ins, func(i, j int) bool { return ins[i].Name < ins[j].Name })
	var errs []error
	for _, in := range ins {
		if in.Labels[project.LabelService] != svc {
			continue
		}
		if err := lifecycle.Stop(st, in, grace); err != nil {
			errs = append(errs, err)
			continue
		}
		cur, err := st.Get(in.ID)
		if err == nil {
			err = startInstance(g, st, cur)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(in.Name)
	}
	return errors.Join(errs...)
}
