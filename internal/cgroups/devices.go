package cgroups

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// DeviceRule is one device access rule, with the meaning of a line
// written to cgroup v1's devices.allow or devices.deny: Type 'a' (every
// device, major and minor ignored), 'b' (block) or 'c' (character);
// Major and Minor -1 for any; Access a non-empty subset of "rwm" (read,
// write, mknod). Rules apply in order, as v1 applies them: an 'a' rule
// sets the default (deny: no device; allow: every device) and clears the
// exceptions; any other rule adds an exception to the default, or, when
// it agrees with the default, takes its accesses off the exception for
// exactly that device. On v2 a BPF program (devfilter_linux.go) computes
// the same answers.
type DeviceRule struct {
	Allow        bool
	Type         byte
	Major, Minor int64
	Access       string
}

// String is the rule as devices.allow and devices.deny take it, e.g.
// "c 1:3 rwm" or "a *:* rwm".
func (d DeviceRule) String() string {
	num := func(n int64) string {
		if n < 0 {
			return "*"
		}
		return strconv.FormatInt(n, 10)
	}
	if d.Type == 'a' {
		return "a *:* rwm"
	}
	return string(d.Type) + " " + num(d.Major) + ":" + num(d.Minor) + " " + d.Access
}

// Check says what is wrong with the rule, if anything.
func (d DeviceRule) Check() error {
	if d.Type != 'a' && d.Type != 'b' && d.Type != 'c' {
		return fmt.Errorf("device rule %q: type %q: want a, b or c: %w", d.String(), d.Type, errdefs.ErrInvalid)
	}
	if d.Access == "" || strings.Trim(d.Access, "rwm") != "" {
		return fmt.Errorf("device rule %q: access %q: want letters of rwm: %w", d.String(), d.Access, errdefs.ErrInvalid)
	}
	if d.Major < -1 || d.Minor < -1 || d.Major > 1<<32-1 || d.Minor > 1<<32-1 {
		return fmt.Errorf("device rule %q: major and minor run from 0 to 2^32-1 (-1: any): %w", d.String(), errdefs.ErrInvalid)
	}
	return nil
}

// DefaultDevices are the rules a container gets by default, Docker's and
// runc's: no device at all, except creating any device node (mknod, which
// needs CAP_MKNOD: a node is of no use without access) and using null,
// zero, full, random, urandom, tty, console, ptmx, the pseudo-terminals
// (136:*) and tun (10:200).
func DefaultDevices() []DeviceRule {
	c := func(major, minor int64) DeviceRule {
		return DeviceRule{Allow: true, Type: 'c', Major: major, Minor: minor, Access: "rwm"}
	}
	return []DeviceRule{
		{Allow: false, Type: 'a', Major: -1, Minor: -1, Access: "rwm"},
		{Allow: true, Type: 'c', Major: -1, Minor: -1, Access: "m"},
		{Allow: true, Type: 'b', Major: -1, Minor: -1, Access: "m"},
		c(1, 3), c(1, 5), c(1, 7), c(1, 8), c(1, 9),
		c(5, 0), c(5, 1), c(5, 2), c(136, -1), c(10, 200),
	}
}
