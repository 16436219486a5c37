package main

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
)

func cmdKill(g *globals, args []string) error {
	fs := newFlags("kill")
	name := fs.String("s", "KILL", "signal name or number")
	fs.StringVar(name, "signal", "KILL", "signal name or number")
	if err := parse(fs, args); err != nil {
		return err
	}
	sig, err := parseSignal(*name)
	if err != nil {
		return err
	}
	return eachInstance(g, fs.Args(), func(st *instance.Store, in *instance.Instance) error {
		return signalInstance(st, in, sig)
	})
}

// parseSignal reads "KILL", "SIGKILL", "kill" or "9".
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("signal %q: unknown: %w", s, errdefs.ErrInvalid)
}
