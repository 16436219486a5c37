package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	rt "github.com/berth-dev/berth/internal/runtime"
)

// createFlags are the flags create and run share.
type createFlags struct {
	bundle, pidFile, consoleSocket string
	preserveFDs                    int
}

// check refuses what berth-runtime cannot do.
func (f *createFlags) check() error {
	if f.preserveFDs != 0 {
		return fmt.Errorf("--preserve-fds %d: passing extra fds is not supported: %w", f.preserveFDs, errdefs.ErrNotSupported)
	}
	return nil
}

func (f *createFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.bundle, "bundle", "", "bundle directory (default: the working directory)")
	fs.StringVar(&f.bundle, "b", "", "bundle directory")
	fs.StringVar(&f.pidFile, "pid-file", "", "write the container process's pid here")
	fs.StringVar(&f.consoleSocket, "console-socket", "", "unix socket that receives the terminal's master")
	fs.Bool("no-pivot", false, "accepted; berth always uses pivot_root")
	fs.Bool("no-new-keyring", false, "accepted; no session keyring is created")
	fs.IntVar(&f.preserveFDs, "preserve-fds", 0, "extra fds to pass in (only 0 is supported)")
}

func (f *createFlags) options(g *globals, id string) rt.CreateOptions {
	return rt.CreateOptions{
		ID:            id,
		Bundle:        f.bundle,
		PidFile:       f.pidFile,
		ConsoleSocket: f.consoleSocket,
		Isolation:     g.isolation,
		Stdio:         container.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr},
	}
}

// cmdCreate: create the container of a bundle; its process waits for start.
func cmdCreate(ctx context.Context, g *globals, args []string) error {
	var f createFlags
	fs := newFlags("create")
	f.register(fs)
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
	c, err := st.Create(ctx, f.options(g, id))
	if err != nil {
		return err
	}
	if c.Console != nil {
		c.Console.Close()
	}
	g.log.Debug("created", "id", id, "pid", c.State.Pid)
	return nil
}
