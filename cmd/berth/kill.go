package main

import (
	"syscall"

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
		if endsWorkload(sig) {
			return lifecycle.Kill(st, in, sig)
		}
		return lifecycle.Signal(st, in, sig)
	})
}

// endsWorkload reports whether kill -s sig is the user's stop, which no
// restart policy undoes: the signals that end a process and are not
// conventionally a message to it (HUP, USR1 and USR2 are).
func endsWorkload(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
		return true
	}
	return false
}
