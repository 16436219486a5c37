package caps

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Last returns the highest capability number the running kernel knows, from
// /proc/sys/kernel/cap_last_cap (or, where /proc is missing, by probing the
// bounding set). It is read once per process.
func Last() int { return lastCap() }

var lastCap = sync.OnceValue(func() int {
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	// PR_CAPBSET_READ fails with EINVAL for numbers the kernel does not know.
	n := 0
	for n < 63 {
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(n+1), 0, 0, 0); err != nil {
			break
		}
		n++
	}
	return n
})

// sets is an OCI capability set as bit masks, without the capabilities the
// running kernel lacks.
type sets struct {
	bnd, eff, perm, inh, amb uint64
}

// parseSets turns c's names into masks. Any unknown name is an error naming
// it; known capabilities above Last are dropped silently.
func parseSets(c *specs.LinuxCapabilities) (sets, error) {
	var s sets
	last := Last()
	for _, l := range []struct {
		names []string
		mask  *uint64
	}{
		{c.Bounding, &s.bnd}, {c.Effective, &s.eff}, {c.Permitted, &s.perm},
		{c.Inheritable, &s.inh}, {c.Ambient, &s.amb},
	} {
		for _, name := range l.names {
			n, err := Parse(name)
			if err != nil {
				return sets{}, err
			}
			if n <= last {
				*l.mask |= 1 << uint(n)
			}
		}
	}
	return s, nil
}

// Apply gives the calling OS thread exactly the capabilities in c. The caller
// must hold runtime.LockOSThread and should be about to execve (or be a
// thread that never runs other goroutines again): the change cannot be
// undone. A nil c changes nothing.
//
// In order: every capability not in c.Bounding is dropped from the bounding
// set (needs CAP_SETPCAP, so it comes first); then the effective, permitted
// and inheritable sets are set with capset(2); then the ambient set is
// cleared and each ambient capability raised (each must be permitted and
// inheritable). All names are checked before anything changes; an unknown
// one is ErrInvalid.
func Apply(c *specs.LinuxCapabilities) error {
	if c == nil {
		return nil
	}
	s, err := parseSets(c)
	if err != nil {
		return err
	}
	for n := 0; n <= Last(); n++ {
		if s.bnd&(1<<uint(n)) != 0 {
			continue
		}
		in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(n), 0, 0, 0)
		if err != nil {
			return fmt.Errorf("capabilities: read %s in the bounding set: %w", Name(n), err)
		}
		if in == 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(n), 0, 0, 0); err != nil {
			return wrapErrno(fmt.Sprintf("drop %s from the bounding set", Name(n)), err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i := range data {
		shift := uint(32 * i)
		data[i] = unix.CapUserData{
			Effective:   uint32(s.eff >> shift),
			Permitted:   uint32(s.perm >> shift),
			Inheritable: uint32(s.inh >> shift),
		}
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return wrapErrno("set effective, permitted and inheritable sets", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		if s.amb == 0 && errors.Is(err, unix.EINVAL) {
			return nil // kernel before 4.3: no ambient set, none wanted
		}
		return wrapErrno("clear the ambient set", err)
	}
	for n := 0; n <= Last(); n++ {
		if s.amb&(1<<uint(n)) == 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(n), 0, 0); err != nil {
			return wrapErrno(fmt.Sprintf("raise %s in the ambient set (it must be permitted and inheritable)", Name(n)), err)
		}
	}
	return nil
}

// wrapErrno is the one-line error for a failed capability operation.
func wrapErrno(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("capabilities: %s: %w: %w", what, err, errdefs.ErrUnavailable)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("capabilities: %s: %w: %w", what, err, errdefs.ErrInvalid)
	}
	return fmt.Errorf("capabilities: %s: %w", what, err)
}

// Current reads the calling thread's capability sets from
// /proc/thread-self/status, as bit masks (bit n is capability n).
func Current() (eff, perm, inh, bnd, amb uint64, err error) {
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("capabilities: %w", err)
	}
	fields := map[string]*uint64{"CapEff": &eff, "CapPrm": &perm, "CapInh": &inh, "CapBnd": &bnd, "CapAmb": &amb}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		dst, want := fields[k]
		if !ok || !want {
			continue
		}
		if *dst, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64); err != nil {
			return 0, 0, 0, 0, 0, fmt.Errorf("capabilities: status line %s holds %q: %w", k, v, errdefs.ErrInvalid)
		}
	}
	return eff, perm, inh, bnd, amb, nil
}
