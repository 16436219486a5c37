package instance

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// FileReader reads a file of the image's root file system by its absolute
// path inside the image. It returns an error wrapping os.ErrNotExist when
// the file is absent.
type FileReader func(path string) ([]byte, error)

// LayerReader reads files from overlay lower directories (lowest first) as
// overlayfs would show them: the topmost layer that has the path wins, and
// a whiteout or an opaque directory hides what lies below. Files are opened
// without following symlinks, so a hostile image cannot make berth read
// host files.
func LayerReader(layers []string) FileReader {
	return func(path string) ([]byte, error) {
		rel := strings.TrimPrefix(filepath.Clean("/"+path), "/")
		for i := len(layers) - 1; i >= 0; i-- {
			data, found, hidden, err := readLayer(layers[i], rel)
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
func readLayer(layer, rel string) (data []byte, found, hidden bool, err error) {
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
	fd, err := unix.Openat2(unix.AT_FDCWD, filepath.Join(layer, rel), &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, false, false, fmt.Errorf("%s: is a symlink in the image, not followed: %w", rel, errdefs.ErrInvalid)
		}
		return nil, false, opaque, nil
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, false, false, fmt.Errorf("read /%s of the image: %w", rel, err)
	}
	return buf.Bytes(), true, false, nil
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
// numeric ID need not be listed.
func ResolveUser(spec string, rootfs FileReader) (User, error) {
	u := User{Home: "/"}
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	passwd, _ := rootfs("/etc/passwd")
	groupFile, _ := rootfs("/etc/group")
	name := ""
	if id, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(id)
		if e, ok := findEntry(passwd, "", userPart, 2); ok {
			name, u.GID, u.Home = e[0], atou(e[3]), e[5]
		} else if u.UID == 0 {
			name, u.Home = "root", "/root"
		}
	} else {
		e, ok := findEntry(passwd, userPart, "", 2)
		if !ok {
			return u, fmt.Errorf("user %q: no such user in the image's /etc/passwd: %w", userPart, errdefs.ErrInvalid)
		}
		name, u.UID, u.GID, u.Home = e[0], atou(e[2]), atou(e[3]), e[5]
	}
	if hasGroup {
		if id, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(id)
		} else {
			e, ok := findEntry(groupFile, groupPart, "", 2)
			if !ok {
				return u, fmt.Errorf("group %q: no such group in the image's /etc/group: %w", groupPart, errdefs.ErrInvalid)
			}
			u.GID = atou(e[2])
		}
	} else if name != "" {
		u.Groups = memberOf(groupFile, name, u.GID)
	}
	if u.Home == "" {
		u.Home = "/"
	}
	return u, nil
}

// findEntry finds the colon-separated line of a passwd or group file whose
// first field is name (or, with name empty, whose field idField is id).
func findEntry(data []byte, name, id string, idField int) ([]string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 7 && len(f) != 4 {
			continue
		}
		if (name != "" && f[0] == name) || (name == "" && f[idField] == id) {
			for len(f) < 7 {
				f = append(f, "")
			}
			return f, true
		}
	}
	return nil, false
}

// memberOf lists the groups that name the user as a member, besides its
// primary group.
func memberOf(groupFile []byte, user string, primary uint32) []uint32 {
	var gids []uint32
	sc := bufio.NewScanner(bytes.NewReader(groupFile))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 4 {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == user {
				if g := atou(f[2]); g != primary {
					gids = append(gids, g)
				}
			}
		}
	}
	return gids
}

func atou(s string) uint32 {
	v, _ := strconv.ParseUint(s, 10, 32)
	return uint32(v)
}
