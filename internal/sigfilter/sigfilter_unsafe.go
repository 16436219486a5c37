//go:build linux && amd64

package sigfilter

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read by filter (sigfilter_amd64.s) in signal context: self is written
// before the filter is in place, next[sig] before the runtime's handler
// of sig can be reached through it.
var (
	//lint:ignore U1000 read by filter, in assembly
	self int32       // this process's pid in its own namespace
	next [65]uintptr // per signal, the handler a passing signal goes on to; 0 drops it
)

// filter is the handler Install puts in place (sigfilter_amd64.s); the
// kernel calls it, never Go.
//
//lint:ignore U1000 called by the kernel, its address taken in assembly
func filter()

// filterPC is filter's address.
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

// Install puts the filter in front of the runtime's handler of every
// signal; an ignored signal stays ignored, and one at its default action
// gets the filter alone, which drops it (a handled signal, unlike an
// ignored one, is back at its default in a program the process execs). Call it once, after the last signal.Notify and before
// anything that could send the process a signal runs: a handler the
// runtime installs later replaces the filter. It reports whether the
// filter is in place (false on a machine it does not know).
func Install() bool {
	self = int32(unix.Getpid())
	// The runtime installs one handler, with the same flags, mask and
	// restorer, for every signal it handles: SIGURG's (its preemption
	// signal, always handled) is the model of the filter's, which takes
	// each signal's place in one call that returns what was there.
	var act sigaction
	if err := rtSigaction(int(unix.SIGURG), nil, &act); err != nil || act.handler == sigDFL || act.handler == sigIGN {
		return false
	}
	runtimeHandler := uintptr(act.handler)
	act.handler = uint64(filterPC())
	for sig := 1; sig < len(next); sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		var old sigaction
		if rtSigaction(sig, &act, &old) != nil {
			continue
		}
		// Until next is set the filter drops the signal: the runtime
		// would die of one it does not handle.
		if old.handler == uint64(runtimeHandler) {
			next[sig] = runtimeHandler
		} else if old.handler != sigDFL {
			// Ignored, or a handler of someone else's: as it was.
			rtSigaction(sig, &old, nil)
		}
	}
	return true
}
