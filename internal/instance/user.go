package instance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/regfile"
	"github.com/berth-dev/berth/internal/userdb"
)

// FileReader reads a file of the image's root file system by its absolute
// path inside the image, as userdb.ReadFunc: at most limit bytes of a
// regular file. It returns an error wrapping os.ErrNotExist when the file
// is absent.
type FileReader = userdb.ReadFunc

// LayerReader reads files from overlay lower directories (lowest first) as
// overlayfs would show them: the topmost layer that has the path wins, and
// a whiteout or an opaque directory hides what lies below. Symlinks are not
// followed (ELOOP), so a hostile image cannot make berth read host files,
// and only regular files are opened for reading (see regfile), so a FIFO or
// device cannot block berth or act on being opened.
func LayerReader(layers []string) FileReader {
	return func(path string, limit int64) ([]byte, error) {
		rel := strings.TrimPrefix(filepath.Clean("/"+path), "/")
		for i := len(layers) - 1; i >= 0; i-- {
			data, found, hidden, err := readLayer(layers[i], rel, limit)
			if err != nil || found {
				return data, err
			}
			if hidden {
				break
			}
		}
		return nil, fmt.Errorf("%s: %w", path, os.ErrNotExist)
	}
}

// readLayer looks for rel in one layer. hidden reports that the layer
// whites out rel or one of its parents, so lower layers must not be read.
func readLayer(layer, rel string, limit int64) (data []byte, found, hidden bool, err error) {
	// A whiteout or opaque marker on any parent hides lower layers.
	parts := strings.Split(rel, "/")
	opaque := false
	for i := 1; i <= len(parts); i++ {
		p := filepath.Join(layer, filepath.Join(parts[:i]...))
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return nil, false, opaque, nil
		}
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
			return nil, false, true, nil
		}
		if i < len(parts) && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, false, true, nil
		}
		if i < len(parts) && isOpaque(p) {
			opaque = true
		}
	}
	data, err = regfile.ReadFile(unix.AT_FDCWD, filepath.Join(layer, rel), unix.RESOLVE_NO_SYMLINKS, limit)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, opaque, nil
	}
	if err != nil {
		return nil, false, false, err
	}
	return data, true, false, nil
}

func isOpaque(dir string) bool {
	buf := make([]byte, 1)
	for _, name := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if n, err := unix.Lgetxattr(dir, name, buf); err == nil && n == 1 && buf[0] == 'y' {
			return true
		}
	}
	return false
}

// User is a resolved user: numeric IDs, supplementary groups and home.
type User struct {
	UID, GID uint32
	Groups   []uint32
	Home     string
}

// ResolveUser resolves Docker's user forms against the image's files:
// "" (root), "NAME", "UID", "NAME:GROUP", "UID:GID" and mixes. A name that
// the image's /etc/passwd or /etc/group does not list is an error; a
// numeric ID need not be listed. Either file may be missing, but one that
// is no regular file or is too large is an error (see userdb.Load).
func ResolveUser(spec string, rootfs FileReader) (User, error) {
	u := User{Home: "/"}
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	db, err := userdb.Load(rootfs, "image's")
	if err != nil {
		return u, err
	}
	name := ""
	if id, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(id)
		if e, ok := userdb.Lookup(db.Passwd, 2, userPart); ok {
			name, u.GID, u.Home = e[0], userdb.ID(e[3]), e[5]
		} else if u.UID == 0 {
			name, u.Home = "root", "/root"
		}
	} else {
		e, ok := userdb.Lookup(db.Passwd, 0, userPart)
		if !ok {
			return u, fmt.Errorf("user %q: no such user in the image's /etc/passwd: %w", userPart, errdefs.ErrInvalid)
		}
		name, u.UID, u.GID, u.Home = e[0], userdb.ID(e[2]), userdb.ID(e[3]), e[5]
	}
	if hasGroup {
		if id, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(id)
		} else {
			e, ok := userdb.Lookup(db.Group, 0, groupPart)
			if !ok {
				return u, fmt.Errorf("group %q: no such group in the image's /etc/group: %w", groupPart, errdefs.ErrInvalid)
			}
			u.GID = userdb.ID(e[2])
		}
	} else if name != "" {
		u.Groups = userdb.Groups(db.Group, name, u.GID)
	}
	if u.Home == "" {
		u.Home = "/"
	}
	return u, nil
}
