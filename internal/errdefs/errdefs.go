// Package errdefs holds the handful of error classes berth's packages wrap
// their errors in, so callers can test them with errors.Is and the command
// line can map them to exit codes in one place.
//
// Wrap with context: fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound).
package errdefs

import "errors"

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
