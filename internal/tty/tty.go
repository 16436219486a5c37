// Package tty moves bytes, window sizes and modes between the user's
// terminal and an instance's (whose pty the container engine allocates
// inside the instance and hands over as its master), and opens host ptys.
package tty

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Open allocates a pty pair from the calling process's /dev/ptmx (for a
// process of the host: the host's devpts). Containers do not use it: the
// engine allocates their terminals inside them (container.Console).
func Open() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	s, err := os.OpenFile(name, os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	return m, s, nil
}

// Size is f's window size as an OCI console size, nil when f is not a
// terminal (or has no size yet).
func Size(f *os.File) *specs.Box {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row == 0 && ws.Col == 0 {
		return nil
	}
	return &specs.Box{Height: uint(ws.Row), Width: uint(ws.Col)}
}

// CopySize gives dst the window size of src.
func CopySize(src, dst *os.File) {
	ws, err := unix.IoctlGetWinsize(int(src.Fd()), unix.TIOCGWINSZ)
	if err == nil {
		_ = unix.IoctlSetWinsize(int(dst.Fd()), unix.TIOCSWINSZ, ws)
	}
}

// Attach puts the user's terminal (in) into raw mode, keeps the pty
// master's size in step with it, and returns a function that restores the
// terminal. When in is not a terminal it does nothing.
func Attach(in, master *os.File) (restore func()) {
	return AttachFunc(in, func(specs.Box) { CopySize(in, master) })
}

// AttachSizes is AttachFunc delivering the sizes on a channel, for a
// reader that may be late: a size that finds the channel full is
// dropped (a later one follows).
func AttachSizes(in *os.File) (sizes <-chan specs.Box, restore func()) {
	ch := make(chan specs.Box, 4)
	restore = AttachFunc(in, func(b specs.Box) {
		select {
		case ch <- b:
		default:
		}
	})
	return ch, restore
}

// AttachFunc is Attach for a terminal that is not a local pty (a VM
// guest's): resize is called with the user's terminal size at once and
// on every change.
func AttachFunc(in *os.File, resize func(specs.Box)) (restore func()) {
	if !term.IsTerminal(int(in.Fd())) {
		return func() {}
	}
	if b := Size(in); b != nil {
		resize(*b)
	}
	old, err := term.MakeRaw(int(in.Fd()))
	if err != nil {
		return func() {}
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		for range winch {
			if b := Size(in); b != nil {
				resize(*b)
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(winch)
		_ = term.Restore(int(in.Fd()), old)
	}
}
