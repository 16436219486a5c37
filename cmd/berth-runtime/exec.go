package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	rt "github.com/berth-dev/berth/internal/runtime"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// cmdExec: run a process in a running container. With --detach it
// returns once the process runs (its pid in --pid-file; the caller, a
// subreaper such as the containerd shim, waits for it); otherwise it
// waits and exits with the process's status.
func cmdExec(ctx context.Context, g *globals, args []string) error {
	fs := newFlags("exec")
	var (
		processFile, cwd, user, pidFile, consoleSocket string
		tty, detach, noNewPrivs                        bool
		env, caps                                      listFlag
	)
	fs.StringVar(&processFile, "process", "", "process.json of the runtime spec")
	fs.StringVar(&processFile, "p", "", "process.json of the runtime spec")
	fs.StringVar(&cwd, "cwd", "", "working directory")
	fs.StringVar(&user, "user", "", "UID[:GID] or NAME")
	fs.StringVar(&user, "u", "", "UID[:GID] or NAME")
	fs.Var(&env, "env", "K=V (repeatable)")
	fs.Var(&env, "e", "K=V (repeatable)")
	fs.Var(&caps, "cap", "add a capability (repeatable)")
	fs.BoolVar(&tty, "tty", false, "allocate a terminal")
	fs.BoolVar(&tty, "t", false, "allocate a terminal")
	fs.BoolVar(&detach, "detach", false, "do not wait for the process")
	fs.BoolVar(&detach, "d", false, "do not wait for the process")
	fs.BoolVar(&noNewPrivs, "no-new-privs", false, "set no_new_privs")
	fs.StringVar(&pidFile, "pid-file", "", "write the process's pid here")
	fs.StringVar(&consoleSocket, "console-socket", "", "unix socket that receives the terminal's master")
	fs.String("process-label", "", "ignored (no SELinux)")
	fs.String("apparmor", "", "ignored (no AppArmor)")
	fs.Int("preserve-fds", 0, "ignored")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	if fs.NArg() < 1 {
		return fmt.Errorf("want a container ID: %w", errdefs.ErrInvalid)
	}
	id := fs.Arg(0)
	st, err := g.store()
	if err != nil {
		return err
	}
	var p *specs.Process
	if processFile != "" {
		b, err := os.ReadFile(processFile)
		if err != nil {
			return fmt.Errorf("--process: %w", err)
		}
		p = &specs.Process{}
		if err := json.Unmarshal(b, p); err != nil {
			return fmt.Errorf("--process %s: %v: %w", processFile, err, errdefs.ErrInvalid)
		}
	} else {
		if fs.NArg() < 2 {
			return fmt.Errorf("want a command after the container ID: %w", errdefs.ErrInvalid)
		}
		spec, err := st.Spec(id)
		if err != nil {
			return err
		}
		p = spec.Process
		p.Args = fs.Args()[1:]
		p.Terminal = tty
		p.Env = append(p.Env, env...)
		if cwd != "" {
			p.Cwd = cwd
		}
		if user != "" {
			u, err := parseUser(user)
			if err != nil {
				return err
			}
			p.User = u
		}
		if noNewPrivs {
			p.NoNewPrivileges = true
		}
		if len(caps) > 0 && p.Capabilities != nil {
			c := p.Capabilities
			c.Bounding = append(c.Bounding, caps...)
			c.Effective = append(c.Effective, caps...)
			c.Permitted = append(c.Permitted, caps...)
		}
	}
	if p.Terminal && detach && consoleSocket == "" {
		return fmt.Errorf("a terminal with --detach needs --console-socket: %w", errdefs.ErrInvalid)
	}
	code, err := st.Exec(ctx, id, p, rt.ExecOptions{
		Stdio:  container.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr},
		Detach: detach, PidFile: pidFile, ConsoleSocket: consoleSocket,
	})
	if err != nil || detach {
		return err
	}
	return exitStatus(code)
}

// parseUser takes UID[:GID] or a user name.
func parseUser(s string) (specs.User, error) {
	name, group, _ := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(name, 10, 32)
	if err != nil {
		if group != "" {
			return specs.User{}, fmt.Errorf("--user %q: a name takes no group: %w", s, errdefs.ErrInvalid)
		}
		return specs.User{Username: name}, nil
	}
	u := specs.User{UID: uint32(uid)}
	if group != "" {
		gid, err := strconv.ParseUint(group, 10, 32)
		if err != nil {
			return specs.User{}, fmt.Errorf("--user %q: the group must be a number: %w", s, errdefs.ErrInvalid)
		}
		u.GID = uint32(gid)
	}
	return u, nil
}
