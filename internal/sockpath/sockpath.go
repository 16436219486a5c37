// Package sockpath lets unix sockets live at paths longer than a socket
// address holds (108 bytes), as instance directories under a deep --root
// do.
package sockpath

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Max is the longest path a unix socket address holds.
const Max = 107

// Do runs fn with a name for path that fits a socket address: path
// itself, or /proc/self/fd/N/BASE through an O_PATH descriptor of its
// directory, open only while fn runs.
func Do(path string, fn func(name string) error) error {
	if len(path) <= Max {
		return fn(path)
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	defer unix.Close(fd)
	return fn(fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path)))
}
