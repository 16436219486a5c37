package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-dev/berth/internal/instance"
	rt "github.com/berth-dev/berth/internal/runtime"
	"golang.org/x/sys/unix"
)

// cmdRun: create and start a container; without --detach wait for it,
// delete it (unless --keep) and exit with its status.
func cmdRun(ctx context.Context, g *globals, args []string) error {
	var f createFlags
	fs := newFlags("run")
	f.register(fs)
	detach := fs.Bool("detach", false, "return once the container runs")
	fs.BoolVar(detach, "d", false, "return once the container runs")
	keep := fs.Bool("keep", false, "do not delete the container when it ends")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	o := f.options(g, id)
	o.KeepConsole = !*detach
	c, err := st.Create(ctx, o)
	if err != nil {
		return err
	}
	var stopCopy func()
	if c.Console != nil {
		stopCopy = rt.CopyTerminal(c.Console, o.Stdio)
	}
	if err := st.Start(id); err != nil {
		st.Delete(id, true)
		return err
	}
	if *detach {
		return nil
	}
	// The container's process is this process's child: wait for it,
	// relaying the signals a user sends to run.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, instance.Relayed...)
	go func() {
		for s := range sigs {
			unix.Kill(c.State.Pid, s.(syscall.Signal))
		}
	}()
	var ws unix.WaitStatus
	for {
		_, err = unix.Wait4(c.State.Pid, &ws, 0, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	signal.Stop(sigs)
	if stopCopy != nil {
		stopCopy()
	}
	if !*keep {
		if err := st.Delete(id, true); err != nil {
			return err
		}
	}
	switch {
	case err != nil:
		return err
	case ws.Signaled():
		return exitStatus(128 + int(ws.Signal()))
	}
	return exitStatus(ws.ExitStatus())
}
