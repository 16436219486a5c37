//go:build linux && amd64

package sigfilter

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read by filter (sigfilter_amd64.s) in signal context: written only by
// Install, before the filter is in place.
var (
	self int32       // this process's pid in its own namespace
	next [65]uintptr // per signal, the handler a passing signal goes on to; 0 drops it
)

func filter()
func filterPC() uintptr

// sigaction is the kernel's struct sigaction on linux/amd64.
type sigaction struct {
	handler, flags, restorer, mask uint64
}

const (
	sigDFL = 0
	sigIGN = 1
)

func rtSigaction(sig int, act, old *sigaction) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(act)), uintptr(unsafe.Pointer(old)), 8, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Install puts the filter in front of the handler of every signal the
// kernel lets a process handle; an ignored signal stays ignored, and one
// at its default action gets the filter alone, which drops it (a handled
// signal, unlike an ignored one, is back at its default in a program the
// process execs). Call it once, after the last signal.Notify: a handler
// the runtime installs later replaces the filter. It reports whether the
// filter is in place (false on a machine it does not know).
func Install() bool {
	self = int32(unix.Getpid())
	// The runtime's handler of SIGURG (its preemption signal, always
	// handled) gives the flags, mask and restorer that a signal without
	// a handler of the runtime's gets with the filter.
	var tmpl sigaction
	if err := rtSigaction(int(unix.SIGURG), nil, &tmpl); err != nil || tmpl.handler == sigDFL || tmpl.handler == sigIGN {
		return false
	}
	pc := uint64(filterPC())
	for sig := 1; sig < len(next); sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		var old sigaction
		if rtSigaction(sig, nil, &old) != nil || old.handler == sigIGN {
			continue
		}
		act := old
		if old.handler == sigDFL {
			act = tmpl
		} else {
			next[sig] = uintptr(old.handler)
		}
		act.handler = pc
		if rtSigaction(sig, &act, nil) != nil {
			next[sig] = 0
		}
	}
	return true
}
