// Package userdb reads a root file system's /etc/passwd and /etc/group and
// looks users and groups up in them, as the C library's files backend
// would, for Docker's user forms. Both the host (reading an image's layers)
// and the container's init (reading its own root) use it.
package userdb

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/regfile"
)

// MaxSize bounds each file: real ones hold a few KiB, and a hostile image
// must not make berth read without end.
const MaxSize = 4 << 20

// Paths of the two files.
const (
	PasswdPath = "/etc/passwd"
	GroupPath  = "/etc/group"
)

// Files holds the content of the two files; a missing file is empty.
type Files struct {
	Passwd, Group []byte
}

// ReadFunc reads the file at an absolute path of the root, failing with
// regfile.ErrTooLarge beyond limit bytes and with regfile.ErrNotRegular
// when it is no regular file (regfile.ReadFile bound to a root does).
type ReadFunc func(path string, limit int64) ([]byte, error)

// Load reads both files through read. A missing file reads as empty, as
// the C library treats it, and so does a symbolic link that read refuses
// to follow (ELOOP). Anything else than a regular file, or a file larger
// than MaxSize, is an ErrInvalid error naming whose file it is ("image's").
func Load(read ReadFunc, whose string) (Files, error) {
	var db Files
	var err error
	if db.Passwd, err = load(read, PasswdPath, whose); err != nil {
		return Files{}, err
	}
	if db.Group, err = load(read, GroupPath, whose); err != nil {
		return Files{}, err
	}
	return db, nil
}

func load(read ReadFunc, path, whose string) ([]byte, error) {
	data, err := read(path, MaxSize)
	var kind *regfile.KindError
	switch {
	case err == nil:
		return data, nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.ELOOP):
		return nil, nil
	case errors.As(err, &kind):
		return nil, fmt.Errorf("%s %s is %v: %w", whose, path, kind, errdefs.ErrInvalid)
	case errors.Is(err, regfile.ErrTooLarge):
		return nil, fmt.Errorf("%s %s is larger than %d MiB: %w", whose, path, MaxSize>>20, errdefs.ErrInvalid)
	}
	return nil, fmt.Errorf("read %s %s: %w", whose, path, unwrapPath(err))
}

// unwrapPath drops an *fs.PathError's operation and path, which name a
// host path where the message already names the file.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Lookup returns the first entry of a passwd or group file whose field
// idx equals val, as 7 fields (a group entry's padded with empty ones).
// Blank lines and comments are skipped, and so are lines that are neither
// a group entry (4 fields) nor a passwd entry (7; further colons belong to
// the shell field, as the C library reads it).
func Lookup(data []byte, idx int, val string) ([]string, bool) {
	for line := range strings.Lines(string(data)) {
		f, ok := fields(line)
		if ok && idx >= 0 && idx < len(f) && f[idx] == val {
			for len(f) < 7 {
				f = append(f, "")
			}
			return f, true
		}
	}
	return nil, false
}

// Groups returns the IDs of the groups of a group file that list user as
// a member, except primary, in file order.
func Groups(group []byte, user string, primary uint32) []uint32 {
	var gids []uint32
	for line := range strings.Lines(string(group)) {
		f, ok := fields(line)
		if !ok || len(f) != 4 {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == user {
				if g := ID(f[2]); g != primary {
					gids = append(gids, g)
				}
				break
			}
		}
	}
	return gids
}

// fields splits one line into a group's 4 or a passwd entry's 7 fields.
func fields(line string) ([]string, bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return nil, false
	}
	f := strings.SplitN(line, ":", 7)
	return f, len(f) == 4 || len(f) == 7
}

// ID parses a numeric ID field; anything else is 0, as the files backend
// reads it.
func ID(s string) uint32 {
	v, _ := strconv.ParseUint(s, 10, 32)
	return uint32(v)
}
