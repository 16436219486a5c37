package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxSymlinks bounds symlink resolution, as the kernel's 40 does for paths.
const maxSymlinks = 255

// resolveIn returns the host path of the container path p under root,
// resolving symlinks as if root were "/": an absolute link restarts at
// root and ".." never climbs above it, so a hostile image cannot point a
// mount destination outside its root file system. Components that do not
// exist are kept as they are (the caller creates them); every existing
// component of the result is a real directory or the final file.
//
// It is meant for the init's setup, before anything of the container runs,
// so the tree cannot change between resolving and using the path.
func resolveIn(root, p string) (string, error) {
	rest := splitPath(p)
	cur := "/" // resolved so far, relative to root
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(filepath.Join(root, next))
		if errors.Is(err, fs.ErrNotExist) {
			cur = next
			continue
		}
		if err != nil {
			return "", fmt.Errorf("resolve %q in the root: %w", p, unwrapErrno(err))
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		links++
		if links > maxSymlinks {
			return "", fmt.Errorf("resolve %q in the root: %w", p, syscall.ELOOP)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("resolve %q in the root: %w", p, unwrapErrno(err))
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(splitPath(target), rest...)
	}
	return filepath.Join(root, cur), nil
}

func splitPath(p string) []string { return strings.Split(p, "/") }

// unwrapErrno strips os's "op path:" wrapping so a message names the
// path once, the way the caller wants.
func unwrapErrno(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}
