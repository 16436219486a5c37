package main

import (
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
	"github.com/berth-dev/berth/internal/signame"
)

func cmdKill(g *globals, args []string) error {
	fs := newFlags("kill")
	name := fs.String("s", "KILL", "signal name or number")
	fs.StringVar(name, "signal", "KILL", "signal name or number")
	if err := parse(fs, args); err != nil {
		return err
	}
	sig, err := signame.Parse(*name)
	if err != nil {
		return err
	}
	return eachInstance(g, fs.Args(), func(st *instance.Store, in *instance.Instance) error {
		return lifecycle.Signal(st, in, sig)
	})
}
