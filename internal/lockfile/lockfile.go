// Package lockfile takes the advisory locks (flock(2)) that serialise
// berth's processes on what they share on disk: an instance's record, a
// container's state directory, the image store, a cache entry being
// built. A lock lives as long as its open file: closing the file, or the
// process ending, releases it.
package lockfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// Flock applies flock(2) operation how (unix.LOCK_EX, unix.LOCK_SH,
// unix.LOCK_UN, with unix.LOCK_NB or not) to f, retried when a signal
// interrupts the wait.
func Flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// Open opens the lock file path, creating it (mode 0600) when missing, and
// flocks it with how. The lock is held until the file is closed. A failure
// to open is os.OpenFile's *os.PathError (errors.Is finds fs.ErrNotExist
// when a directory on the way is missing); a failure to lock is a
// *os.PathError of op "lock".
func Open(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := Flock(f, how); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "lock", Path: path, Err: err}
	}
	return f, nil
}
