package main

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Go's runtime leaves a few signals at their default disposition (32 and
// 34 on Linux: it keeps them for C threading libraries), so
// signal.Notify cannot catch them. For init the kernel drops such a
// signal, but not reliably: while the agent's main thread runs a signal
// handler (all signals blocked) the kernel lets the signal through and
// delivers it to another thread, where its default action ends the
// whole process, and the guest ("Attempted to kill init! exitcode=0x22"
// after a storm of signals from the workload). The agent ignores them
// instead, except while it starts a process, which must begin with
// every disposition at its default (an ignored signal stays ignored
// across fork and exec).

// uncaught are the signals the agent ignores because Go does not catch
// them.
var (
	uncaughtMu sync.Mutex
	uncaught   []int
)

// kernelSigaction is the kernel's struct sigaction on linux/amd64.
type kernelSigaction struct {
	handler, flags, restorer, mask uint64
}

const (
	sigDFL = 0
	sigIGN = 1
)

func setDisposition(sig int, handler uint64) {
	act := kernelSigaction{handler: handler}
	_, _, _ = unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
}

// disposition returns sig's current handler (sigDFL, sigIGN or a
// function), or ok false when the kernel knows no such signal.
func disposition(sig int) (handler uint64, ok bool) {
	var old kernelSigaction
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0)
	return old.handler, errno == 0
}

// ignoreUncaught ignores every signal that Go's runtime neither catches
// nor the kernel refuses to deliver to init (SIGKILL, SIGSTOP); call it
// after signal.Notify for all signals. It asks the kernel for each
// signal's handler (/proc/self/status's SigCgt says the same, but
// reading it costs the guest about ten times more).
func ignoreUncaught() {
	uncaughtMu.Lock()
	defer uncaughtMu.Unlock()
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if h, ok := disposition(sig); !ok || (h != sigDFL && h != sigIGN) {
			continue // caught by Go's runtime
		}
		setDisposition(sig, sigIGN)
		uncaught = append(uncaught, sig)
	}
}

// defaultUncaught puts the uncaught signals back to their default
// disposition for a process about to be forked, and returns the
// function that ignores them again once it has exec'd.
func defaultUncaught() (restore func()) {
	uncaughtMu.Lock()
	for _, sig := range uncaught {
		setDisposition(sig, sigDFL)
	}
	return func() {
		for _, sig := range uncaught {
			setDisposition(sig, sigIGN)
		}
		uncaughtMu.Unlock()
	}
}
