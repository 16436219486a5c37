package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/errdefs"
	"golang.org/x/sys/unix"
)

// cmdKill: send a signal (default SIGTERM) to the container's process,
// or with --all to every process in it.
func cmdKill(_ context.Context, g *globals, args []string) error {
	fs := newFlags("kill")
	all := fs.Bool("all", false, "signal every process of the container")
	fs.BoolVar(all, "a", false, "signal every process of the container")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return fmt.Errorf("want ID [SIGNAL]: %w", errdefs.ErrInvalid)
	}
	sig := syscall.SIGTERM
	if fs.NArg() == 2 {
		var err error
		if sig, err = parseSignal(fs.Arg(1)); err != nil {
			return err
		}
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	return st.Kill(fs.Arg(0), sig, *all)
}

// parseSignal takes a number, a name (KILL, SIGKILL, kill) or RTMIN+N.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %q: out of range: %w", s, errdefs.ErrInvalid)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	if rest, ok := strings.CutPrefix(name, "SIGRTMIN+"); ok {
		if n, err := strconv.Atoi(rest); err == nil && n >= 0 && 34+n <= 64 {
			return syscall.Signal(34 + n), nil
		}
	}
	return 0, fmt.Errorf("signal %q: unknown: %w", s, errdefs.ErrInvalid)
}
