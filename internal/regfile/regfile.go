// Package regfile opens and reads files that must be regular files, at
// paths in trees berth does not trust: an image's layers, a container's
// root, an image layout someone else unpacked. What is found at the path is
// checked through an O_PATH descriptor before it is opened for reading, so
// a FIFO there cannot block the reader and a device cannot act on being
// opened (a watchdog arms, a tape rewinds); reads are bounded.
package regfile

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

var (
	// ErrNotRegular: the path names something other than a regular file;
	// errors.As finds a *KindError saying what.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge: the file holds more than the reader's limit.
	ErrTooLarge = errors.New("too large")
)

// KindError is the ErrNotRegular of a path that names Kind ("a FIFO",
// "a character device", ...) instead of a regular file.
type KindError struct{ Kind string }

func (e *KindError) Error() string        { return e.Kind + ", not a regular file" }
func (e *KindError) Is(target error) bool { return target == ErrNotRegular }

// Open opens path for reading when it is a regular file. path is resolved
// under dirfd (unix.AT_FDCWD: the working directory) with the given openat2
// resolve flags (unix.RESOLVE_*); with unix.RESOLVE_NO_SYMLINKS a symlink
// anywhere on the path, the last component included, fails with ELOOP.
// Errors are *os.PathError for the path, wrapping ErrNotRegular when it
// names anything else than a regular file.
func Open(dirfd int, path string, resolve uint64) (*os.File, error) {
	pfd, err := openat(dirfd, path, unix.O_PATH, resolve)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(pfd)
	var want unix.Stat_t
	if err := unix.Fstat(pfd, &want); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if err := regular(want.Mode); err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	// The same path again, now for reading: O_NONBLOCK and O_NOCTTY in
	// case it was replaced meanwhile, which the identity check then sees.
	fd, err := openat(dirfd, path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, resolve)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var got unix.Stat_t
	err = unix.Fstat(fd, &got)
	if err == nil {
		err = regular(got.Mode)
	}
	if err == nil && (got.Dev != want.Dev || got.Ino != want.Ino) {
		err = &KindError{Kind: "a file replaced while it was opened"}
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// ReadFile reads the regular file at path (resolved as Open does) when it
// holds at most limit bytes; a larger file fails with ErrTooLarge.
func ReadFile(dirfd int, path string, resolve uint64, limit int64) ([]byte, error) {
	f, err := Open(dirfd, path, resolve)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("more than %d bytes: %w", limit, ErrTooLarge)}
	}
	return data, nil
}

// openat opens with openat2 when resolve flags are asked for, and with
// plain openat otherwise (kernels before 5.6 have no openat2).
func openat(dirfd int, path string, flags int, resolve uint64) (int, error) {
	flags |= unix.O_CLOEXEC
	for {
		var fd int
		var err error
		if resolve != 0 {
			fd, err = unix.Openat2(dirfd, path, &unix.OpenHow{Flags: uint64(flags), Resolve: resolve})
		} else {
			fd, err = unix.Openat(dirfd, path, flags, 0)
		}
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// regular returns nil for a regular file's mode and an error naming the
// kind of file otherwise.
func regular(mode uint32) error {
	kind := "of unknown type"
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return nil
	case unix.S_IFDIR:
		kind = "a directory"
	case unix.S_IFLNK:
		kind = "a symbolic link"
	case unix.S_IFIFO:
		kind = "a FIFO"
	case unix.S_IFSOCK:
		kind = "a socket"
	case unix.S_IFCHR:
		kind = "a character device"
	case unix.S_IFBLK:
		kind = "a block device"
	}
	return &KindError{Kind: kind}
}
