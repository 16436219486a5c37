package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/tty"
)

func cmdExec(g *globals, args []string) error {
	fs := newFlags("exec")
	interactive := fs.Bool("i", false, "keep stdin open")
	fs.BoolVar(interactive, "interactive", false, "keep stdin open")
	useTty := fs.Bool("t", false, "allocate a terminal")
	fs.BoolVar(useTty, "tty", false, "allocate a terminal")
	var env listFlag
	fs.Var(&env, "e", "set an environment variable K=V")
	fs.Var(&env, "env", "set an environment variable K=V")
	workdir := fs.String("w", "", "working directory")
	fs.StringVar(workdir, "workdir", "", "working directory")
	user := fs.String("u", "", "user UID[:GID] or NAME[:GROUP]")
	fs.StringVar(user, "user", "", "user UID[:GID] or NAME[:GROUP]")
	if err := parseStrict(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return fmt.Errorf("want an instance and a command: %w", errdefs.ErrInvalid)
	}
	if err := instance.ValidateEnv(env); err != nil {
		return err
	}
	if *workdir != "" && !filepath.IsAbs(*workdir) {
		return fmt.Errorf("working directory %q is not absolute: %w", *workdir, errdefs.ErrInvalid)
	}
	st, in, err := lookupInstance(g, fs.Arg(0))
	if err != nil {
		return err
	}
	if err := requireRunning(in); err != nil {
		return err
	}
	b, err := st.LoadBundle(in.ID)
	if err != nil {
		return err
	}
	p := *b.Spec.Process
	p.Args = fs.Args()[1:]
	p.Terminal = *useTty
	p.ConsoleSize = nil
	if p.Terminal {
		p.ConsoleSize = terminalSize()
	}
	p.Env = instance.MergeEnv(p.Env, env)
	if *workdir != "" {
		p.Cwd = *workdir
	}
	if *user != "" {
		u, err := instance.ResolveUser(*user, instance.LayerReader(b.Layers))
		if err != nil {
			return err
		}
		p.User.UID, p.User.GID, p.User.AdditionalGids = u.UID, u.GID, u.Groups
	}
	if in.Isolation == instance.IsolationVM {
		var resize <-chan specs.Box
		if p.Terminal {
			var restore func()
			resize, restore = tty.AttachSizes(os.Stdin)
			defer restore()
		}
		return execVM(st, in, &p, *interactive || p.Terminal, resize)
	}
	return execAttached(in, &p, *interactive)
}

// execAttached runs p in the instance with this terminal's stdio and
// returns the command's exit status.
func execAttached(in *instance.Instance, p *specs.Process, interactive bool) error {
	stdio := container.Stdio{Stdout: os.Stdout, Stderr: os.Stderr}
	if interactive {
		stdio.Stdin = os.Stdin
	}
	// With -t the engine allocates the terminal inside the instance and
	// stdio is not used; proc.Console() is its master.
	proc, err := container.Exec(context.Background(), in.Pid, in.Cgroup, p, stdio)
	if err != nil {
		return err
	}
	drained := func() {}
	if master := proc.Console(); master != nil {
		var detach func()
		drained, detach = attachTerminal(master, interactive)
		defer detach()
	}
	exit, err := proc.Wait()
	if err != nil {
		return err
	}
	drained()
	return exitStatus(exit.Code)
}
