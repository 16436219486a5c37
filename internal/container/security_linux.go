package container

import (
	"fmt"
	"syscall"

	"github.com/berth-dev/berth/internal/caps"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// rlimitNames maps OCI rlimit names to resources.
var rlimitNames = map[string]int{
	"RLIMIT_CPU":        unix.RLIMIT_CPU,
	"RLIMIT_FSIZE":      unix.RLIMIT_FSIZE,
	"RLIMIT_DATA":       unix.RLIMIT_DATA,
	"RLIMIT_STACK":      unix.RLIMIT_STACK,
	"RLIMIT_CORE":       unix.RLIMIT_CORE,
	"RLIMIT_RSS":        unix.RLIMIT_RSS,
	"RLIMIT_NPROC":      unix.RLIMIT_NPROC,
	"RLIMIT_NOFILE":     unix.RLIMIT_NOFILE,
	"RLIMIT_MEMLOCK":    unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS":         unix.RLIMIT_AS,
	"RLIMIT_LOCKS":      unix.RLIMIT_LOCKS,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_MSGQUEUE":   unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE":       unix.RLIMIT_NICE,
	"RLIMIT_RTPRIO":     unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME":     unix.RLIMIT_RTTIME,
}

// setRlimits applies the spec's rlimits to this process (and so to what it
// starts). It goes through package syscall so that the Go runtime does not
// put its original RLIMIT_NOFILE back in the children.
func setRlimits(rls []specs.POSIXRlimit) error {
	for _, rl := range rls {
		res, ok := rlimitNames[rl.Type]
		if !ok {
			return fmt.Errorf("rlimit %q: unknown: %w", rl.Type, errdefs.ErrInvalid)
		}
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: rl.Soft, Max: rl.Hard}); err != nil {
			return fmt.Errorf("rlimit %s=%d:%d: %w", rl.Type, rl.Soft, rl.Hard, err)
		}
	}
	return nil
}

// applySecurity drops capabilities on the calling thread (which must be
// locked and never unlocked), sets no_new_privs and loads the seccomp
// filter, in that order: seccomp comes last so the filter does not have
// to allow what the steps before it need. prog, when not empty, is filter
// compiled ahead of time.
func applySecurity(p *specs.Process, filter *specs.LinuxSeccomp, prog []unix.SockFilter) error {
	if p.Capabilities != nil {
		if err := applyCaps(p.Capabilities); err != nil {
			return err
		}
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	switch {
	case filter != nil && len(prog) > 0:
		if err := seccomp.Install(prog, filter); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
	case filter != nil:
		if err := seccomp.Load(filter); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
	}
	return nil
}

// applyCaps applies the capability sets to the calling (locked) thread.
func applyCaps(c *specs.LinuxCapabilities) error {
	if err := caps.Apply(c); err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	return nil
}
