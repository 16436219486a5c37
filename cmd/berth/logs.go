package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
)

func cmdLogs(g *globals, args []string) error {
	fs := newFlags("logs")
	follow := fs.Bool("f", false, "follow the output until the instance ends")
	fs.BoolVar(follow, "follow", false, "follow the output until the instance ends")
	proj := fs.String("project", "", "the compose project whose service SERVICE names (default: the one project that has it)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want exactly one instance")
	}
	st, in, err := lookupInstance(g, fs.Arg(0))
	if errors.Is(err, errdefs.ErrNotFound) {
		// A compose service's name: its replicas' output, merged.
		if p, perr := serviceProject(g, *proj, fs.Arg(0)); perr == nil {
			return followServices(g, p, []string{fs.Arg(0)}, *follow)
		}
	}
	if err != nil {
		return err
	}
	if !in.Detached {
		return fmt.Errorf("instance %s ran in the foreground; its output went to the terminal, not a log", in.ShortID())
	}
	done := func() bool {
		cur, err := st.Get(in.ID)
		return err != nil || lifecycle.Reconcile(st, cur).Status == instance.Stopped
	}
	return instance.ReadLogs(st.LogPath(in.ID), os.Stdout, os.Stderr, *follow, done)
}
