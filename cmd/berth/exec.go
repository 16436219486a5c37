package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
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
	if err := lifecycle.RequireActive(in); err != nil {
		return err
	}
	if in.Status == instance.Paused {
		return fmt.Errorf("instance %s is paused: unpause it first: %w", in.ShortID(), errdefs.ErrConflict)
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
	h, err := lifecycle.Handle(st, in)
	if err != nil {
		return err
	}
	return execAttached(h, lifecycle.Traits(in), &p, *interactive)
}

// execAttached runs p in the instance with this terminal's stdio and
// returns the command's exit status.
func execAttached(h engine.Handle, traits engine.Traits, p *specs.Process, interactive bool) error {
	// A local terminal (the engine's pty on the host, proc.Console) is
	// attached to ours; an instance's own terminal streams through stdio,
	// stdin included, with our window size sent along.
	ownTerminal := p.Terminal && !traits.LocalTerminal
	stdio := engine.Stdio{Stdout: os.Stdout, Stderr: os.Stderr}
	if interactive || ownTerminal {
		stdio.Stdin = os.Stdin
	}
	var resize <-chan specs.Box
	if ownTerminal {
		var restore func()
		resize, restore = tty.AttachSizes(os.Stdin)
		defer restore()
	}
	proc, err := h.Exec(context.Background(), p, stdio, resize)
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
