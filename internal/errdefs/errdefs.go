// Package errdefs holds the handful of error classes berth's packages wrap
// their errors in, so callers can test them with errors.Is and the command
// line can map them to exit codes in one place.
//
// Wrap with context: fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound).
package errdefs

import (
	"errors"
	"strings"
)

var (
	// ErrNotFound: the named thing (image, instance, blob, file) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the input (an archive, a flag, a spec) is malformed or hostile.
	ErrInvalid = errors.New("invalid")
	// ErrConflict: the operation clashes with the current state (name in use,
	// instance running, forbidden state transition).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: something the host must provide is missing
	// (a kernel feature, a binary, a cgroup controller).
	ErrUnavailable = errors.New("unavailable")
	// ErrNotSupported: berth does not implement this on this platform.
	ErrNotSupported = errors.New("not supported")
)

// classes are the classes in the order ClassName tries them.
var classes = []error{ErrNotFound, ErrInvalid, ErrConflict, ErrUnavailable, ErrNotSupported}

// ClassName names err's class for the sockets between berth's processes
// (an instance's control socket, a container's stage pipe): the class's
// own text ("not found"), or "" when err has none.
func ClassName(err error) string {
	for _, c := range classes {
		if errors.Is(err, c) {
			return c.Error()
		}
	}
	return ""
}

// Decode rebuilds an error another berth process sent: its text msg, in
// the class ClassName named (errors.Is finds it); an empty or unknown
// name leaves it without a class.
func Decode(msg, class string) error {
	e := &decoded{msg: msg}
	for _, c := range classes {
		if c.Error() == class {
			e.class = c
		}
	}
	return e
}

type decoded struct {
	msg   string
	class error
}

func (e *decoded) Error() string { return e.msg }
func (e *decoded) Unwrap() error { return e.class }

// OneLine is err's text on one line, as records and front ends show it.
func OneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}
