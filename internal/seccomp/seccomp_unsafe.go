//go:build linux

package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Load compiles p and installs it with seccomp(2) (SECCOMP_SET_MODE_FILTER)
// on every thread of the calling process (SECCOMP_FILTER_FLAG_TSYNC), with
// the profile's SECCOMP_FILTER_FLAG_LOG and SECCOMP_FILTER_FLAG_SPEC_ALLOW.
// Filters stack: a loaded filter cannot be removed, and later ones can only
// restrict further.
//
// The kernel accepts a filter only from a task with no_new_privs set or
// with CAP_SYS_ADMIN: the caller sets no_new_privs first
// (unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)), after everything
// that needs privileges, since the filter also binds the caller.
func Load(p *specs.LinuxSeccomp) error {
	prog, err := Compile(p)
	if err != nil {
		return err
	}
	return Install(prog, p)
}

// Install installs prog, compiled from p beforehand (by Compile, possibly
// in another process), the way Load does, on every thread of the process
// (SECCOMP_FILTER_FLAG_TSYNC). Compiling ahead lets a caller take the
// compile off a latency-critical path.
func Install(prog []unix.SockFilter, p *specs.LinuxSeccomp) error {
	return install(prog, p, true)
}

// InstallThread is Install for the calling thread alone, and whatever it
// forks: the process's other threads stay unfiltered. The caller keeps
// its goroutine locked to the thread (runtime.LockOSThread).
func InstallThread(prog []unix.SockFilter, p *specs.LinuxSeccomp) error {
	return install(prog, p, false)
}

func install(prog []unix.SockFilter, p *specs.LinuxSeccomp, allThreads bool) error {
	if len(prog) == 0 || len(prog) > maxInsns {
		return fmt.Errorf("seccomp: program of %d instructions: %w", len(prog), errdefs.ErrInvalid)
	}
	flags, err := filterFlags(p)
	if err != nil {
		return err
	}
	if !allThreads {
		flags &^= unix.SECCOMP_FILTER_FLAG_TSYNC
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	switch {
	case errno == 0 && r != 0:
		// With TSYNC, a positive return is a thread that could not be synchronised.
		return fmt.Errorf("seccomp: load filter: thread %d has an incompatible filter: %w", r, errdefs.ErrConflict)
	case errno == 0:
		return nil
	case errors.Is(errno, unix.EACCES):
		return fmt.Errorf("seccomp: load filter: no_new_privs is not set and the caller lacks CAP_SYS_ADMIN: %w (%w)",
			errdefs.ErrConflict, errno)
	case errors.Is(errno, unix.ENOSYS):
		return fmt.Errorf("seccomp: load filter: kernel has no seccomp(2): %w (%w)", errdefs.ErrUnavailable, errno)
	case errors.Is(errno, unix.EINVAL):
		return fmt.Errorf("seccomp: load filter: kernel refused the filter or flags %#x: %w (%w)",
			flags, errdefs.ErrUnavailable, errno)
	default:
		return fmt.Errorf("seccomp: load filter: %w", errno)
	}
}
