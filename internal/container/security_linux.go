package container

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/caps"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/rlimit"
	"github.com/berth-dev/berth/internal/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setRlimits applies the spec's rlimits to this process (and so to what it
// starts). It goes through package syscall so that the Go runtime does not
// put its original RLIMIT_NOFILE back in the children.
func setRlimits(rls []specs.POSIXRlimit) error {
	for _, rl := range rls {
		res, ok := rlimit.Resource(rl.Type)
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
// compiled ahead of time. With forking, the filter binds the calling
// thread alone, and what it forks (the init's other threads are filtered
// once the workload runs: filterInit); otherwise every thread (the
// caller is about to execve).
func applySecurity(p *specs.Process, filter *specs.LinuxSeccomp, prog []unix.SockFilter, forking bool) error {
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
		install := seccomp.Install
		if forking {
			install = seccomp.InstallThread
		}
		if err := install(prog, filter); err != nil {
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
// An ambient capability that is not both permitted and inheritable
// cannot be raised; as runc does, it is left out rather than failing the
// start (runc spec's default names ambient capabilities it cannot raise).
func applyCaps(c *specs.LinuxCapabilities) error {
	cc := *c
	cc.Ambient = nil
	for _, a := range c.Ambient {
		if hasCap(c.Permitted, a) && hasCap(c.Inheritable, a) {
			cc.Ambient = append(cc.Ambient, a)
		}
	}
	if err := caps.Apply(&cc); err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	return nil
}

// switchUser makes the calling (locked) thread cred's user with the
// capability sets c, as runc does: the bounding set is dropped while the
// thread is still root, the permitted set is kept across the uid change
// (PR_SET_KEEPCAPS; CAP_SETUID and CAP_SETGID stay permitted until then
// even when c leaves them out), and c's sets are applied once the uid is
// changed. So a non-root user keeps exactly the capabilities the spec
// gives it (ambient ones through execve), and a spec without CAP_SETUID
// can still name a user.
func switchUser(c *specs.LinuxCapabilities, cred credential) error {
	if c == nil {
		return setCredential(cred)
	}
	pre := *c
	pre.Ambient = nil
	pre.Effective = withCaps(c.Permitted, "CAP_SETUID", "CAP_SETGID")
	pre.Permitted = pre.Effective
	if err := applyCaps(&pre); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("keep capabilities: %w", err)
	}
	if err := setCredential(cred); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("keep capabilities: %w", err)
	}
	return applyCaps(c)
}

func hasCap(set []string, name string) bool {
	n, err := caps.Parse(name)
	if err != nil {
		return false
	}
	for _, c := range set {
		if m, err := caps.Parse(c); err == nil && m == n {
			return true
		}
	}
	return false
}

// withCaps returns set plus the named capabilities (a new slice).
func withCaps(set []string, more ...string) []string {
	out := append([]string{}, set...)
	for _, m := range more {
		found := false
		for _, c := range set {
			if strings.EqualFold(c, m) || strings.EqualFold("CAP_"+c, m) {
				found = true
			}
		}
		if !found {
			out = append(out, m)
		}
	}
	return out
}
