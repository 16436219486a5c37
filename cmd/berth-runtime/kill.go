package main

import (
	"context"
	"fmt"
	"syscall"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/signame"
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
		if sig, err = signame.Parse(fs.Arg(1)); err != nil {
			return err
		}
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	return st.Kill(fs.Arg(0), sig, *all)
}
